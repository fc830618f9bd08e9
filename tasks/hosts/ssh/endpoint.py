"""Where a host without an agent is reached over SSH, and as whom its job runs."""

from dataclasses import dataclass

# The host columns read (after the agent's) to build an SshEndpoint, in ssh_endpoint's order.
SSH_COLUMNS = ("channel", "ssh_port", "ssh_user", "ssh_host_key")


@dataclass(frozen=True)
class SshEndpoint:
    """A host's SSH address, login, recorded host key, and the account its job runs as."""

    host_id: str
    address: str
    port: int
    user: str
    host_key: str
    account: str = ""


def ssh_endpoint(
    hostname: str, address: str, account: str, channel: str, port: int, user: str, host_key: str
) -> SshEndpoint | None:
    """The SSH endpoint of a host whose channel is `ssh` (the SSH_COLUMNS, in order), else None."""
    if channel != "ssh":
        return None
    return SshEndpoint(hostname, address, port, user, host_key, account)
