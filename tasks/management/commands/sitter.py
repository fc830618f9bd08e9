"""`manage.py sitter`: the sitter's process (Procfile: sitter), a pass every CCS_SITTER_INTERVAL
seconds. A process of its own, not a Celery task: it needs no broker to find what is due and
outlives the controller; run two for redundancy (every action is guarded in the database)."""

import logging
import signal
import threading

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import close_old_connections, connection

from ccs.metrics import sitter_actions_count
from tasks.services import sitter_run

log = logging.getLogger("tasks.sitter")


class Command(BaseCommand):
    help = "Run the sitter: resumes, lapsed shard leases, lost shard messages, callback takeovers."

    def handle(self, *args: object, **options: object) -> None:
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        log.info("sitter: a pass every %s s", settings.CCS_SITTER_INTERVAL)
        while not stop.is_set():
            self.one_pass()
            stop.wait(settings.CCS_SITTER_INTERVAL)

    def one_pass(self) -> None:
        """A pass; a database or broker that is down fails this pass only, with its cause
        logged, and the next one tries again on a fresh connection."""
        close_old_connections()
        try:
            done = sitter_run()
        except Exception:
            log.exception("sitter: pass failed; trying again in %s s",
                          settings.CCS_SITTER_INTERVAL)
            connection.close()
            return
        sitter_actions_count(done)
        if any(done.values()):
            log.info("sitter: %s", done)
