"""Create or update hosts from a CSV or JSON inventory file: all or nothing, unless told."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, OutputWrapper

from permissions.importer import COLUMNS, FORMATS, ImportFileError, rows_read, rows_validate
from permissions.services import hosts_import

# Below this many rows the import is over before a bar would be worth drawing.
PROGRESS_MIN_ROWS = 1000


def _plain(text: str) -> str:
    return text


class ProgressBar:
    """A dependency-free one-line bar, redrawn in place on a terminal."""

    WIDTH = 30

    def __init__(self, out: OutputWrapper, total: int, label: str) -> None:
        self.out, self.total, self.label, self.done = out, max(total, 1), label, 0
        self.closed = False
        self._draw()

    def advance(self, count: int) -> None:
        self.done += count
        self._draw()
        if self.done >= self.total:
            # End the line now: the import logs its summary on commit, before close().
            self.close()

    def close(self) -> None:
        if not self.closed:
            self.out.write("", style_func=_plain)
        self.closed = True

    def _draw(self) -> None:
        filled = self.WIDTH * self.done // self.total
        bar = "#" * filled + "." * (self.WIDTH - filled)
        percent = 100 * self.done // self.total
        line = f"\r{self.label} [{bar}] {self.done}/{self.total} {percent:3d}%"
        self.out.write(line, style_func=_plain, ending="")
        self.out.flush()


class Command(BaseCommand):
    help = (
        "Create or update hosts from a CSV or JSON file (columns: "
        f"{','.join(COLUMNS)}), creating missing nodes and datacenters. Every row is checked "
        "first; any bad row stops the whole import unless --skip-bad is given."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("file", type=Path, help="a .csv with a header row, or a .json list")
        parser.add_argument("--format", dest="fmt", choices=FORMATS,
                            help="the file's format when its extension does not say")
        parser.add_argument("--skip-bad", action="store_true",
                            help="import the good rows even when some rows are bad")
        parser.add_argument("--progress", action="store_true",
                            help="always show the progress bar (default: large files on a tty)")

    def handle(self, *args, file: Path, fmt: str | None, skip_bad: bool, progress: bool,
               **kw) -> None:
        try:
            raws = rows_read(file, fmt)
        except ImportFileError as error:
            raise CommandError(f"{file}: {error}") from None
        rows, errors = rows_validate(raws)
        for error in errors:
            self.stderr.write(f"{file}: {error}")
        if errors and not skip_bad:
            raise CommandError(
                f"{len(errors)} of {len(raws)} rows are bad; nothing imported "
                "(fix them, or pass --skip-bad to import the good rows)"
            )
        bar = self._progress_bar(len(rows), progress)
        counts = hosts_import(rows=rows, source=str(file), progress=bar.advance if bar else None)
        if bar:
            bar.close()
        self.stdout.write(
            f"hosts: {counts.created} created, {counts.updated} updated, "
            f"{counts.unchanged} unchanged, {len(errors)} rejected"
        )
        self.stdout.write(
            f"nodes: {counts.nodes_created} created; "
            f"datacenters: {counts.datacenters_created} created"
        )

    def _progress_bar(self, total: int, forced: bool) -> ProgressBar | None:
        if forced or (total > PROGRESS_MIN_ROWS and self.stderr.isatty()):
            return ProgressBar(self.stderr, total, "importing hosts")
        return None
