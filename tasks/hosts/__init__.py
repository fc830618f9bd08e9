"""Talking to hosts, in one place: where each host is reached and with which key
(`endpoints`), the job each subtask sends (`jobs`), the fan-out loop over pooled agent channels
(`fanout`), what a reply means for a subtask (`replies`), and the SSH channel for hosts
without an agent (`ssh`). The wire protocol itself is agent/protocol.py."""
