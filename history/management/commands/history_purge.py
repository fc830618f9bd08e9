"""`manage.py history_purge`: run the retention purge now (what beat runs every hour)."""

from django.core.management.base import BaseCommand, CommandParser

from history.services import history_purge


class Command(BaseCommand):
    help = ("Delete tasks that ended more than --days ago (default CCS_RETENTION_DAYS) with "
            "their subtasks and events, after exporting them to --export (JSON lines).")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--days", type=int, help="keep this many days (0: keep all)")
        parser.add_argument("--export", metavar="DIR",
                            help="write JSON lines files here first (default "
                                 "CCS_RETENTION_EXPORT_DIR)")

    def handle(self, *args: object, days: int | None, export: str | None, **kw: object) -> None:
        purged = history_purge(days=days, export_dir=export)
        self.stdout.write(f"deleted {purged.tasks} tasks, {purged.subtasks} subtasks, "
                          f"{purged.events} events (longest statement "
                          f"{purged.longest_statement_ms:.0f} ms)")
        for path in purged.files:
            self.stdout.write(f"exported to {path}")
