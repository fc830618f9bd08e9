"""Fixtures shared by every test: users, API clients, the real stack for integration tests, and
a real headless Chromium (Debian's, driven by Playwright) for web pages."""

import os
import shutil
import subprocess
from collections.abc import Iterator

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from rest_framework.test import APIClient

from ccs.stack import (
    CHROMIUM,
    CHROMIUM_FLAGS,
    WORKER_PROCESSES,
    Stack,
    free_port,
    port_open,
    redis_answers,
    wait_for,
    workers_ready,
)
from plugins.services import builtin_plugins_install
from tests.factories import Fleet, hosts_make


@pytest.fixture
def admin(db):
    return get_user_model().objects.create_superuser("root-admin", password="pw")


@pytest.fixture
def api(admin) -> APIClient:
    client = APIClient()
    client.force_authenticate(admin)
    return client


@pytest.fixture
def builtins(db) -> None:
    """The built-in plugins (a transactional test's flush removes the migration's rows)."""
    builtin_plugins_install()


def _on_test_database() -> dict[str, str]:
    """The environment of a child process that works on the test database."""
    db = connection.settings_dict
    url = f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    return {**os.environ, "DATABASE_URL": url}


@pytest.fixture
def fleet(tmp_path, builtins):
    """A real `ccs-agent fleet` serving ten hosts of dc1 under corp/test."""
    port = free_port()
    running = Fleet(tmp_path, hosts_make("dc1", 10, port), port)
    yield running
    running.stop()


@pytest.fixture(scope="session")
def workers(django_db_setup, django_db_blocker):
    """The controller, one Celery worker per datacenter, the callbacks worker and the sitter,
    as real processes on the test DB."""
    from celery import Celery
    from django.conf import settings

    Celery(broker=settings.CELERY_BROKER_URL).control.purge()
    stack = Stack(env=_on_test_database())
    for name in (*WORKER_PROCESSES, "sitter"):
        stack.start(name)
    try:
        wait_for(lambda: workers_ready(settings.CELERY_BROKER_URL), "celery workers", timeout=90)
        yield stack
    finally:
        stack.stop()


def _web(**env: str) -> Iterator[str]:
    port = free_port()
    stack = Stack(env={**_on_test_database(), "CCS_WEB_PORT": str(port),
                       "CCS_SSE_KEEPALIVE": "1", "CCS_SSE_STREAMS_PER_USER": "5", **env})
    stack.start("web")
    try:
        wait_for(lambda: port_open(port), "web", timeout=60, proc=stack.procs["web"])
        yield f"http://127.0.0.1:{port}"
    finally:
        stack.stop()


@pytest.fixture
def web(django_db_setup) -> Iterator[str]:
    """The Procfile's web process (gunicorn with uvicorn workers: ASGI) on the test database,
    with one-second keep-alives and a limit of 5 open event streams per user; its base URL.
    One per test: a flush between tests gives content types and permissions new ids, which a
    longer-lived process would still hold in its caches."""
    yield from _web()


@pytest.fixture
def web_on_own_redis(django_db_setup, redis_server) -> Iterator[str]:
    """The web process as `web`, its broker and event channel the test's own Redis."""
    yield from _web(CCS_BROKER_URL=redis_server.url(), CCS_REDIS_URL=redis_server.url())


class RedisServer:
    """A redis-server of the test's own on a free loopback port (never the machine's), without
    persistence: a restart loses what it held, as a crash does."""

    def __init__(self, directory) -> None:
        self.port = free_port()
        self.command = [shutil.which("redis-server") or "/usr/bin/redis-server",
                        "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                        "--appendonly", "no", "--logfile", str(directory / "redis.log")]
        self.proc: subprocess.Popen | None = None
        self.start()

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        self.proc = subprocess.Popen(self.command)
        wait_for(lambda: redis_answers(self.url()), "redis-server", proc=self.proc)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture
def redis_server(tmp_path):
    """A Redis of this test's own, which it may stop, restart or take away."""
    server = RedisServer(tmp_path)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def chromium():
    """Module-scoped: Playwright's sync API keeps an event loop running in this thread while
    it is open, and the agent tests (which pytest-django runs last) start their own."""
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop; the ORM calls our tests make beside it are
    # still plain synchronous calls in this thread.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()
    del os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"]


@pytest.fixture
def login(chromium, live_server):
    """A browser page logged in to the admin as the given user (password "pw")."""
    pages = []

    def open_as(username: str):
        page = chromium.new_page()
        pages.append(page)
        page.goto(f"{live_server.url}/admin/login/")
        page.fill("#id_username", username)
        page.fill("#id_password", "pw")
        with page.expect_navigation():
            page.click("input[type=submit]")
        return page

    yield open_as
    for page in pages:
        page.close()


class DnsServer:
    """A real dnsmasq on a loopback port answering for the names it is given, logging every
    query it receives."""

    def __init__(self, directory, names: dict[str, str], ttl: int = 300) -> None:
        import subprocess

        from ccs.stack import free_port, wait_for

        self.hosts, self.log = directory / "dns-hosts", directory / "dns.log"
        self.hosts.write_text("".join(f"{ip} {name}\n" for name, ip in names.items()))
        self.port = free_port()
        self.proc = subprocess.Popen([
            shutil.which("dnsmasq") or "/usr/sbin/dnsmasq", "--keep-in-foreground",
            f"--port={self.port}", "--listen-address=127.0.0.1", "--bind-interfaces",
            "--no-resolv", "--no-hosts", f"--addn-hosts={self.hosts}", f"--local-ttl={ttl}",
            "--local=/test/", "--log-queries", f"--log-facility={self.log}", "--user=root",
            "--pid-file=",
        ])
        wait_for(lambda: self.log.exists() and "read " in self.log.read_text(), "dnsmasq",
                 proc=self.proc)
        self.server = f"127.0.0.1:{self.port}"

    def queries(self, name: str) -> int:
        return self.log.read_text().count(f"query[A] {name} ")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


@pytest.fixture
def dns_server(tmp_path):
    """Start dnsmasq answering for the names given: `dns_server({name: ip})`."""
    servers = []

    def start(names: dict[str, str], ttl: int = 300) -> DnsServer:
        servers.append(DnsServer(tmp_path, names, ttl))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()
