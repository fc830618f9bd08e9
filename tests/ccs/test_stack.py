"""The Procfile runner (`make up`, the demo) starts again, with backoff, a process that dies,
says so in its log, and starts nothing once it is stopped."""

import logging
import signal
import time

from ccs.stack import Stack


def _restarted(stack: Stack, name: str, old_pid: int) -> int:
    deadline = time.monotonic() + 30
    while (proc := stack.procs[name]).pid == old_pid or proc.poll() is not None:
        assert time.monotonic() < deadline, f"{name} not started again"
        time.sleep(0.05)
    return proc.pid


def test_a_supervised_process_that_dies_is_started_again_with_backoff(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="ccs.stack")
    stack = Stack(log_dir=tmp_path, supervise=True)
    first = stack.start("sleeper", "sleep 600").pid
    try:
        stack.procs["sleeper"].send_signal(signal.SIGKILL)
        second = _restarted(stack, "sleeper", first)
        stack.procs["sleeper"].send_signal(signal.SIGKILL)
        _restarted(stack, "sleeper", second)
    finally:
        stack.stop()
    died = [r.getMessage() for r in caplog.records if "exited" in r.getMessage()]
    assert died == [
        f"stack: sleeper exited with code -9; starting it again in {delay} s (restart {n}; "
        f"its log: {tmp_path / 'sleeper.log'})" for n, delay in ((1, 1), (2, 2))
    ]
    assert stack.procs == {}


def test_nothing_is_started_again_once_the_stack_stops(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="ccs.stack")
    stack = Stack(log_dir=tmp_path, supervise=True)
    proc = stack.start("sleeper", "sleep 600")
    stack.stop()
    assert proc.poll() is not None
    time.sleep(1.5)  # longer than the first backoff: a restart would have happened
    assert stack.procs == {} and not caplog.records


def test_unsupervised_stacks_leave_a_dead_process_dead(tmp_path):
    stack = Stack(log_dir=tmp_path)
    proc = stack.start("quitter", "sh -c 'exit 3'")
    try:
        assert proc.wait(timeout=10) == 3
        time.sleep(1.5)
        assert stack.procs["quitter"] is proc
    finally:
        stack.stop()
