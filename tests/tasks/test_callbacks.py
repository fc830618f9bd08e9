"""HTTP callbacks: URL checks, and delivery of every event to a receiver that was down."""

import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tasks.models import CallbackAttempt, Task, TaskEvent
from tests.factories import Fleet, free_port, hosts_make

PING = {"plugin": "ping", "params": {}, "target": {"nodes": ["corp/test"]}, "run_as": "root"}


class Receiver:
    """A real HTTP receiver on loopback that records every POST."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.posts: list[tuple[dict, bytes]] = []
        received = self.posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _verified(secret: str, headers: dict, body: bytes) -> bool:
    parts = dict(item.split("=", 1) for item in headers["ccs-signature"].split(","))
    mac = hmac.new(secret.encode(), f"{parts['t']}.".encode() + body, hashlib.sha256)
    fresh = abs(time.time() - int(parts["t"])) < 300
    return fresh and hmac.compare_digest(mac.hexdigest(), parts["v1"])


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("ftp://example.org/x", "http or https"),
        ("http:///nohost", "http or https"),
        ("http://169.254.169.254/latest/meta-data", "metadata"),
        ("http://[fe80::1]/x", "link-local"),
        ("http://metadata.google.internal/", "metadata"),
        ("http://no-such-host.invalid/", "cannot resolve"),
        ("http://127.0.0.1:9/", "private"),
        ("http://10.1.2.3/", "private"),
    ],
)
def test_callback_urls_are_checked_at_creation(api, builtins, settings, url, words):
    settings.CCS_CALLBACK_ALLOW_PRIVATE = False
    hosts_make("dc1", 1, port=1)
    response = api.post("/api/v1/tasks/", {**PING, "callback_url": url}, format="json")
    assert response.status_code == 400
    assert words in response.json()["errors"]["callback_url"][0]
    assert Task.objects.count() == 0


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_receiver_down_then_up_gets_every_event_in_order_signed(api, workers, builtins, tmp_path):
    port = free_port()
    fleet = Fleet(tmp_path, hosts_make("dc1", 20, port), port)
    receiver_port = free_port()
    try:
        created = api.post("/api/v1/tasks/", {
            **PING, "callback_url": f"http://127.0.0.1:{receiver_port}/hook",
        }, format="json").json()
        secret = created["callback_secret"]
        assert len(secret) == 64
        assert "callback_secret" not in api.get(f"/api/v1/tasks/{created['id']}/").json()
        deadline = time.monotonic() + 30
        while not CallbackAttempt.objects.filter(task_id=created["id"]).exists():
            assert time.monotonic() < deadline, "no delivery was attempted"
            time.sleep(0.1)
        receiver = Receiver(receiver_port)  # the receiver comes up after the first failure
        while True:
            seqs = {e["seq"] for _, body in receiver.posts for e in json.loads(body)}
            finished = Task.objects.get(pk=created["id"]).status == "succeeded"
            total = TaskEvent.objects.filter(task_id=created["id"]).count()
            if finished and len(seqs) == total:
                break
            assert time.monotonic() < deadline + 30, f"{len(seqs)} of {total} events delivered"
            time.sleep(0.2)
    finally:
        fleet.stop()
    receiver.stop()
    delivered = []
    for headers, body in receiver.posts:
        assert _verified(secret, headers, body)
        batch = [e["seq"] for e in json.loads(body)]
        assert batch == sorted(batch)
        delivered += batch
    assert delivered == list(range(1, total + 1))  # each once, in order
    deliveries = [headers["ccs-delivery"] for headers, _ in receiver.posts]
    assert len(set(deliveries)) == len(deliveries)
    attempts = api.get(f"/api/v1/tasks/{created['id']}/callbacks/").json()["results"]
    assert attempts[0]["status_code"] is None and "ConnectError" in attempts[0]["error"]
    assert attempts[-1]["status_code"] == 204
