"""`bench/faults.py` runs in the background: started by this folder's conftest as soon as the
suite is collected (the runs are mostly waiting, each on a PostgreSQL and a Redis server of its
own), read by their tests when they come."""

import json
import signal
import subprocess
import sys
import tempfile
import threading

from ccs.stack import ROOT

# test module → the bench's arguments
RUNS: dict[str, list[str]] = {
    "test_faults": ["--hosts", "40", "--patience", "60", "--json"],
    "test_datacenter_namespaces": ["--netns", "--hosts", "20", "--faults", "none,partition",
                                   "--down", "10", "--patience", "60", "--json"],
}


def namespaces() -> set[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in listed.splitlines() if line.strip()}


class FaultRun:
    """One `bench/faults.py` run; its output goes to files (a pipe nobody reads yet would fill
    and stop it)."""

    def __init__(self, args: list[str]) -> None:
        self.args = args
        self.namespaces_before: set[str] = set()
        self.out = tempfile.TemporaryFile("w+")  # noqa: SIM115 - read when the run ends
        self.err = tempfile.TemporaryFile("w+")  # noqa: SIM115
        self.proc: subprocess.Popen | None = None
        self.ended = threading.Event()

    def run(self) -> None:
        self.namespaces_before = namespaces()
        self.proc = subprocess.Popen([sys.executable, "bench/faults.py", *self.args], cwd=ROOT,
                                     stdout=self.out, stderr=self.err, text=True)
        self.proc.wait()
        self.ended.set()

    def rows(self, timeout: float) -> dict[str, dict]:
        """Its rows by fault, once it has ended well."""
        assert self.ended.wait(timeout), f"bench/faults.py {self.args} still running"
        self.err.seek(0)
        assert self.proc is not None and self.proc.returncode == 0, self.err.read()[-3000:]
        self.out.seek(0)
        found = [json.loads(line) for line in self.out if line.startswith("{")]
        return {row["fault"]: row for row in found}

    def stop(self) -> None:
        """Let it clean up (its servers, its namespaces) if the session ends before it does."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # its `finally` blocks clean up
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()


STARTED: dict[str, FaultRun] = {}
ENDING = threading.Event()  # the session ends: start no further run


def start(modules: list[str]) -> None:
    """The runs of these test modules, one after another in a thread of their own (two at once
    would share the checkout's var/: fleet configs, logs)."""
    runs = [STARTED.setdefault(module, FaultRun(RUNS[module])) for module in modules]

    def one_by_one() -> None:
        for run in runs:
            if ENDING.is_set():
                return
            run.run()

    threading.Thread(target=one_by_one, name="fault-runs", daemon=True).start()


def stop() -> None:
    ENDING.set()
    for run in STARTED.values():
        run.stop()


def fault_run(module: str) -> FaultRun:
    """The run started for this test module."""
    return STARTED[module]
