"""The SSH channel, for hosts without an agent: the same jobs, replies and results as the
agent channel, over paramiko with strict host key checking."""

from .endpoint import SSH_COLUMNS, SshEndpoint, ssh_endpoint
from .pool import SSH
from .session import SshJobLost

__all__ = ["SSH", "SSH_COLUMNS", "SshEndpoint", "SshJobLost", "ssh_endpoint"]
