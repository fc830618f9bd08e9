"""Signed HTTP callbacks: every event of a task POSTed, in order, at least once, with
exponential backoff and jitter; attempts recorded. One deliverer per task at a time holds a
lease on the task's cursor, so batches never overtake each other."""

import hashlib
import hmac
import ipaddress
import json
import logging
import random
import socket
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from urllib.parse import urlsplit

import httpx
from django.conf import settings
from django.db.models import F, Q
from django.utils import timezone

from ccs.errors import InvalidInput

from .. import dispatch
from ..events import events_after
from ..models import CallbackAttempt, CallbackCursor, Task

log = logging.getLogger(__name__)
BATCH = 500
# A deliverer's lease on a task's delivery, renewed every LEASE_RENEW while it delivers: a
# killed deliverer's delivery is taken over by the sitter's sweep within seconds.
LEASE = timedelta(seconds=10)
LEASE_RENEW = 2.0
METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata", "instance-data"})
# Cloud metadata and platform services that are not link-local (AWS IPv6, Alibaba, Azure):
# refused even where private receivers are allowed.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200", "168.63.129.16")
)
# What a failed delivery records: the same words whether a port is closed, filtered or slow,
# so that callbacks cannot be used to map a network (the log has the detail for operators).
NO_RESPONSE = "could not deliver: no HTTP response"


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """`t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<body>">`, the CCS-Signature header."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def _address_refusal(address: str) -> str | None:
    ip = ipaddress.ip_address(address.split("%")[0])
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    if ip.is_link_local or ip in METADATA_ADDRESSES:
        return f"{ip} is link-local or a cloud metadata address"
    if ip.is_multicast or ip.is_unspecified or ip.is_reserved:
        return f"{ip} is not a unicast address"
    if not ip.is_global and not settings.CCS_CALLBACK_ALLOW_PRIVATE:
        return (f"{ip} is not a public address (set CCS_CALLBACK_ALLOW_PRIVATE to allow "
                "private and loopback receivers)")
    return None


def callback_address(url: str) -> str:
    """Resolve the URL's host once and check every address it has: the one address a delivery
    may connect to, or InvalidInput naming what is refused."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput.field("callback_url", "must be an http or https URL with a host")
    if parts.hostname.lower() in METADATA_HOSTS:
        raise InvalidInput.field("callback_url", f"{parts.hostname} is a cloud metadata service")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        infos = socket.getaddrinfo(parts.hostname, port, proto=socket.IPPROTO_TCP)
    except (OSError, ValueError, UnicodeError) as exc:
        reason = f"cannot resolve {parts.hostname}: {exc}"
        raise InvalidInput.field("callback_url", reason) from None
    for info in infos:
        if refusal := _address_refusal(info[4][0]):
            raise InvalidInput.field("callback_url", refusal)
    return str(infos[0][4][0])


def callback_url_check(url: str) -> str:
    """Refuse URLs that are not http(s), do not resolve, or point at link-local, metadata or
    (unless allowed) other non-public addresses; checked again at every delivery."""
    callback_address(url)
    return url


class PinnedTransport(httpx.BaseTransport):
    """Connects to the address that was checked, whatever DNS answers by then: the URL's host
    stays in the Host header and in TLS (SNI, and the certificate is checked against it)."""

    def __init__(self, address: str) -> None:
        self.address = address
        self._inner = httpx.HTTPTransport(trust_env=False)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        pinned = httpx.Request(
            request.method,
            request.url.copy_with(host=self.address),
            headers=request.headers,  # Host: the URL's, set when the request was built
            stream=request.stream,
            extensions={**request.extensions, "sni_hostname": request.url.host},
        )
        return self._inner.handle_request(pinned)

    def close(self) -> None:
        self._inner.close()


def callback_post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int | None, str]:
    """POST once to a checked address, redirects not followed: (status code, error words)."""
    try:
        address = callback_address(url)
    except InvalidInput as exc:
        return None, f"callback URL refused: {exc.errors['callback_url'][0]}"[:500]
    transport = PinnedTransport(address)
    try:
        with httpx.Client(transport=transport, follow_redirects=False,
                          timeout=settings.CCS_CALLBACK_TIMEOUT) as client:
            response = client.post(url, content=body, headers=headers)
    except httpx.HTTPError as exc:
        log.info("callback to %s failed: %s: %s", url, type(exc).__name__, exc)
        return None, NO_RESPONSE
    if 200 <= response.status_code < 300:
        return response.status_code, ""
    return response.status_code, f"HTTP {response.status_code}"


def deliver_request(task_id: int, countdown: float = 0) -> None:
    """Ask the callbacks worker to deliver the task's events (after `countdown` seconds)."""
    dispatch.callbacks_deliver(task_id, countdown).send()


def _lease(task_id: int) -> uuid.UUID | None:
    """Take the task's delivery if nobody holds it and it is due: the lease's token."""
    now, token = timezone.now(), uuid.uuid4()
    taken = (
        CallbackCursor.objects.filter(task_id=task_id, gave_up=False)
        .filter(Q(leased_until__isnull=True) | Q(leased_until__lt=now))
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
        .update(leased_until=now + LEASE, lease_token=token)
    )
    return token if taken else None


def _held(task_id: int, token: uuid.UUID):
    """The task's cursor, if this deliverer still holds its lease."""
    return CallbackCursor.objects.filter(task_id=task_id, lease_token=token)


def _renew(task_id: int, token: uuid.UUID) -> bool:
    return bool(_held(task_id, token).update(leased_until=timezone.now() + LEASE))


def callbacks_deliver(*, task_id: int) -> int:
    """Deliver every undelivered event of the task; returns how many were acknowledged."""
    token = _lease(task_id)
    if token is None:
        return 0  # someone else is delivering, or it is not time to retry yet
    task = Task.objects.only("callback_url", "callback_secret").get(pk=task_id)
    cursor = CallbackCursor.objects.get(task_id=task_id)
    delivered = 0
    try:
        while events := events_after(task_id, cursor.delivered_seq, BATCH):
            if not _post(task, cursor, events, token):
                return delivered
            cursor.delivered_seq, cursor.attempts, cursor.failing_since = events[-1]["seq"], 0, None
            if not _held(task_id, token).update(
                delivered_seq=cursor.delivered_seq, attempts=0, failing_since=None,
                next_attempt_at=None, leased_until=timezone.now() + LEASE,
            ):
                log.warning("task %s: callbacks lease lost mid-delivery; another deliverer "
                            "goes on", task_id)
                return delivered
            delivered += len(events)
    finally:
        _held(task_id, token).update(leased_until=None, lease_token=None)
    return delivered


def _post(task: Task, cursor: CallbackCursor, events: list[dict], token: uuid.UUID) -> bool:
    body = json.dumps(events, separators=(",", ":")).encode()
    delivery = uuid.uuid4()
    headers = {
        "Content-Type": "application/json",
        "CCS-Delivery": str(delivery),
        "CCS-Signature": signature(task.callback_secret, int(time.time()), body),
        "User-Agent": "ccs-callbacks/1",
    }
    started = time.monotonic()
    status_code, error = _holding_lease(
        task.pk, token, lambda: callback_post(task.callback_url, body, headers))
    # no timing without an answer: closed and filtered ports must look alike
    elapsed = int((time.monotonic() - started) * 1000) if status_code is not None else 0
    CallbackAttempt.objects.create(
        task=task, delivery=delivery, first_seq=events[0]["seq"], last_seq=events[-1]["seq"],
        status_code=status_code, error=error, at=timezone.now(), duration_ms=elapsed,
    )
    if error:
        _failed(task.pk, cursor, error, token)
    return not error


def _holding_lease(task_id: int, token: uuid.UUID,
                   post: Callable[[], tuple[int | None, str]]) -> tuple[int | None, str]:
    """Run the POST in a thread of its own while this one (which holds the database
    connection) renews the lease: a slow receiver keeps its deliverer, a killed deliverer's
    lease lapses within LEASE."""
    with ThreadPoolExecutor(1, thread_name_prefix="callback-post") as pool:
        posting = pool.submit(post)
        while True:
            try:
                return posting.result(timeout=LEASE_RENEW)
            except TimeoutError:
                _renew(task_id, token)


def _failed(task_id: int, cursor: CallbackCursor, error: str, token: uuid.UUID) -> None:
    now = timezone.now()
    attempts = cursor.attempts + 1
    failing_since = cursor.failing_since or now
    delay = min(settings.CCS_CALLBACK_BACKOFF_BASE * 2 ** (attempts - 1), 900)
    delay *= random.uniform(0.5, 1.5)  # jitter: receivers that come back are not stampeded
    gave_up = now - failing_since > timedelta(hours=settings.CCS_CALLBACK_RETRY_HOURS)
    _held(task_id, token).update(
        attempts=attempts, failing_since=failing_since, gave_up=gave_up,
        next_attempt_at=now + timedelta(seconds=delay),
    )
    if gave_up:
        log.error("task %s: callbacks given up after %s of failures: %s", task_id,
                  now - failing_since, error)
    else:
        log.warning("task %s: callback failed (%s); retry %d in %.1f s", task_id, error,
                    attempts, delay)
        deliver_request(task_id, countdown=delay)


def callbacks_sweep() -> int:
    """Ask for delivery of every task with undelivered events that is due and that nobody
    holds (run by the sitter): the safety net for announcements that were lost or raced with
    a running deliverer, and the takeover of a deliverer that died (its lease lapsed)."""
    now = timezone.now()
    due = CallbackCursor.objects.filter(
        gave_up=False, delivered_seq__lt=F("task__event_seq")
    ).filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)).filter(
        Q(leased_until__isnull=True) | Q(leased_until__lt=now)
    )
    task_ids = list(due.values_list("task_id", flat=True)[:1000])
    for task_id in task_ids:
        deliver_request(task_id)
    return len(task_ids)
