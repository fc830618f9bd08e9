"""HTTP callbacks: URL checks, and delivery of every event to a receiver that was down."""

import datetime
import hashlib
import hmac
import json
import socket
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tasks.models import CallbackAttempt, Task, TaskEvent
from tasks.services.callbacks import callback_post
from tests.factories import Fleet, free_port, hosts_make

PING = {"plugin": "ping", "params": {}, "target": {"nodes": ["corp/test"]}, "run_as": "root"}


class Receiver:
    """A real HTTP receiver on loopback that records every POST; it answers the first one
    only `hold_first` seconds after receiving it (a slow receiver)."""

    def __init__(self, port: int, hold_first: float = 0) -> None:
        self.port = port
        self.posts: list[tuple[dict, bytes]] = []
        received = self.posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                if len(received) == 1:
                    time.sleep(hold_first)
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
        ("http://127.0.0.1:9/", "not a public address"),
        ("http://10.1.2.3/", "not a public address"),
        # shared address space (carrier-grade NAT) is not private, and not public either
        ("http://100.64.0.1/", "not a public address"),
        ("http://[::ffff:127.0.0.1]/", "not a public address"),
    ],
)
def test_callback_urls_are_checked_at_creation(api, builtins, settings, url, words):
    settings.CCS_CALLBACK_ALLOW_PRIVATE = False
    hosts_make("dc1", 1, port=1)
    response = api.post("/api/v1/tasks/", {**PING, "callback_url": url}, format="json")
    assert response.status_code == 400
    assert words in response.json()["errors"]["callback_url"][0]
    assert Task.objects.count() == 0


@pytest.mark.django_db
@pytest.mark.parametrize("url", ["http://100.100.100.200/latest/meta-data",
                                 "http://[fd00:ec2::254]/", "http://168.63.129.16/machine"])
def test_cloud_metadata_addresses_are_refused_even_where_private_ones_are_allowed(
    api, builtins, settings, url
):
    settings.CCS_CALLBACK_ALLOW_PRIVATE = True
    hosts_make("dc1", 1, port=1)
    response = api.post("/api/v1/tasks/", {**PING, "callback_url": url}, format="json")
    assert response.status_code == 400
    assert "metadata" in response.json()["errors"]["callback_url"][0]


class Recording(Receiver):
    """A receiver that answers a fixed status (and a Location), recording requests."""

    def __init__(self, port: int, status: int = 204, location: str = "") -> None:
        super().__init__(port)
        received = self.posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(status)
                if location:
                    self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server.RequestHandlerClass = Handler


class _Lookups:
    """Counts DNS lookups of one name (audit events of socket.getaddrinfo)."""

    names: list[str] = []
    active = False

    @classmethod
    def hook(cls, event: str, args: tuple) -> None:
        if cls.active and event == "socket.getaddrinfo":
            cls.names.append(args[0])


sys.addaudithook(_Lookups.hook)


def test_a_callback_resolves_once_and_connects_to_the_checked_address(settings):
    settings.CCS_CALLBACK_ALLOW_PRIVATE = True
    port = free_port()
    receiver = Recording(port)
    _Lookups.names, _Lookups.active = [], True
    try:
        status, error = callback_post(f"http://localhost:{port}/hook", b"[]", {})
    finally:
        _Lookups.active = False
        receiver.stop()
    assert (status, error) == (204, "")
    # one answer, checked and used: no second lookup a DNS rebinding could answer otherwise
    assert [name for name in _Lookups.names if name == "localhost"] == ["localhost"]
    assert receiver.posts[0][0]["host"] == f"localhost:{port}"


def test_redirects_are_not_followed(settings):
    settings.CCS_CALLBACK_ALLOW_PRIVATE = True
    port = free_port()
    receiver = Recording(port, status=307, location="http://169.254.169.254/latest/meta-data")
    try:
        assert callback_post(f"http://127.0.0.1:{port}/hook", b"[]", {}) == (307, "HTTP 307")
    finally:
        receiver.stop()
    assert len(receiver.posts) == 1


def test_network_errors_are_stored_without_detail(settings):
    settings.CCS_CALLBACK_ALLOW_PRIVATE = True
    closed, silent = free_port(), socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)  # accepts, never answers
    settings.CCS_CALLBACK_TIMEOUT = 1
    try:
        refused = callback_post(f"http://127.0.0.1:{closed}/", b"[]", {})
        hung = callback_post(f"http://127.0.0.1:{silent.getsockname()[1]}/", b"[]", {})
    finally:
        silent.close()
    # a closed port, a silent one: the same words, so callbacks cannot map a network
    assert refused == hung == (None, "could not deliver: no HTTP response")


def test_tls_is_checked_against_the_url_host_and_sni_names_it(settings, tmp_path):
    settings.CCS_CALLBACK_ALLOW_PRIVATE = True
    names: list[str | None] = []
    server = _tls_server(tmp_path, names)
    port = server.server_address[1]
    try:
        status, error = callback_post(f"https://localhost:{port}/hook", b"[]", {})
    finally:
        server.shutdown()
        server.server_close()
    assert names == ["localhost"]  # the name, although the connection went to the address
    assert (status, error) == (None, "could not deliver: no HTTP response")  # unknown CA


def _tls_server(tmp_path, names: list) -> ThreadingHTTPServer:
    """An HTTPS server with a self-signed certificate for localhost, recording SNI names."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), False)
        .sign(key, hashes.SHA256())
    )
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    context.sni_callback = lambda sock, server_name, ctx: names.append(server_name)
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


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
    assert attempts[0]["status_code"] is None
    assert attempts[0]["error"] == "could not deliver: no HTTP response"
    assert attempts[-1]["status_code"] == 204
