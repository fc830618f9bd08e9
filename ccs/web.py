"""The web's gunicorn worker: uvicorn's (ASGI), with a fixed kernel send buffer per
connection. Autotuned, the buffers of thousands of event streams to clients slower than the
task's events grow to megabytes each, push the machine's TCP memory into pressure, and from
there into dropped packets and retransmits for every connection, plain requests included."""

import socket

from uvicorn_worker import UvicornWorker

SEND_BUFFER = 64 * 1024  # the kernel doubles it


class Worker(UvicornWorker):
    def run(self) -> None:
        for listener in self.sockets:  # accepted connections inherit the listener's size
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        super().run()
