"""Writes of tasks and subtasks: create, release (controller), run shards (workers), operate."""

from .callbacks import callback_url_check, callbacks_deliver, callbacks_sweep, signature
from .create import ControlData, params_validate, quota_check, task_create
from .operate import (
    host_acks_save,
    subtask_pause,
    subtask_resume,
    subtask_stop,
    task_pause,
    task_resume,
    task_stop,
)
from .release import task_progress_update, task_release
from .rerun import task_rerun
from .shard import host_control_run, shard_results_save, shard_run, shard_start
from .sitter import hosts_probe, hosts_probe_plan, shard_pull, sitter_run

__all__ = [
    "ControlData",
    "callback_url_check",
    "callbacks_deliver",
    "callbacks_sweep",
    "signature",
    "host_acks_save",
    "hosts_probe",
    "hosts_probe_plan",
    "shard_pull",
    "sitter_run",
    "host_control_run",
    "params_validate",
    "quota_check",
    "shard_results_save",
    "shard_run",
    "shard_start",
    "subtask_pause",
    "subtask_resume",
    "subtask_stop",
    "task_create",
    "task_pause",
    "task_progress_update",
    "task_release",
    "task_rerun",
    "task_resume",
    "task_stop",
]
