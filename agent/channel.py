"""The encrypted agent channel: framing, symmetric handshake and AES-256-GCM sessions.

The handshake and the framing are written without I/O (`ClientHandshake`, `ServerHandshake`,
`FrameReader`), so that the agent's and the control plane's asyncio protocols and the small
stream helpers at the end of this module all speak exactly the same bytes.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import struct
from collections.abc import Callable, Iterator
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from agent.errors import ChannelError

MAGIC = b"CCS1"
VERSION = 1
NONCE_SIZE = 32
PROOF_SIZE = 32
TAG_SIZE = 16
MAX_FRAME = 4 * 1024 * 1024
HANDSHAKE_TIMEOUT = 5.0
MAX_SEQUENCE = 2**64 - 1
# HELLO is the largest handshake frame: magic + u8 length + 255-byte host id + nonce
HANDSHAKE_MAX = len(MAGIC) + 1 + 255 + NONCE_SIZE

_LENGTH = struct.Struct(">I")
_HEADER = struct.Struct(">BQB")

Lookup = Callable[[str], bytes | None]


def encode_frame(
    aead: AESGCM, seq: int, host_id: str, plaintext: bytes, version: int = VERSION
) -> bytes:
    """Encrypt one data frame and return it with its length prefix."""
    host = host_id.encode()
    header = _HEADER.pack(version, seq, len(host)) + host
    body = header + aead.encrypt(_nonce(seq), plaintext, header)
    return _LENGTH.pack(len(body)) + body


def _nonce(seq: int) -> bytes:
    return b"\x00\x00\x00\x00" + seq.to_bytes(8, "big")


class Session:
    """Keys and sequence counters of one established connection, one per direction."""

    def __init__(
        self, host_id: str, send_key: bytes, recv_key: bytes, max_size: int = MAX_FRAME
    ) -> None:
        self.host_id = host_id
        self.sender = AESGCM(send_key)
        self.send_seq = 0
        self.recv_seq = 0
        self.max_size = max_size
        self._receiver = AESGCM(recv_key)
        self._host = host_id.encode()
        self._header_tail = bytes([len(self._host)]) + self._host

    def seal(self, obj: dict[str, Any]) -> bytes:
        """Encrypt a JSON object into a complete wire frame (length prefix included)."""
        return self.seal_json(_encode(obj))

    def seal_json(self, plaintext: bytes) -> bytes:
        """Encrypt an already encoded JSON object (the caller vouches for it) into a frame."""
        seq = self.send_seq + 1
        if seq > MAX_SEQUENCE:
            raise ChannelError("exhausted")
        header = bytes((VERSION,)) + seq.to_bytes(8, "big") + self._header_tail
        body = header + self.sender.encrypt(_nonce(seq), plaintext, header)
        if len(body) > self.max_size:
            raise ChannelError("too-large")
        # only count the sequence once the frame exists, so a refused frame leaves no gap
        self.send_seq = seq
        return _LENGTH.pack(len(body)) + body

    def open(self, body: bytes) -> dict[str, Any]:
        """Authenticate and decrypt one frame body; raise ChannelError on any problem."""
        if len(body) < _HEADER.size:
            raise ChannelError("bad-frame")
        version, seq, host_len = _HEADER.unpack_from(body)
        if version != VERSION:
            raise ChannelError("bad-version")
        start = _HEADER.size + host_len
        if len(body) < start + TAG_SIZE:
            raise ChannelError("bad-frame")
        header = body[:start]
        try:
            plaintext = self._receiver.decrypt(_nonce(seq), body[start:], header)
        except InvalidTag:
            raise ChannelError("bad-tag") from None
        if seq != self.recv_seq + 1:
            raise ChannelError("replay")
        if header[_HEADER.size :] != self._host:
            raise ChannelError("wrong-host")
        self.recv_seq = seq
        return _decode(plaintext)


def _encode(obj: dict[str, Any]) -> bytes:
    try:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
    except UnicodeEncodeError:
        # a lone surrogate (possible after JSON-decoding "\ud800") has no UTF-8 form; escape all
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=True).encode()


def _decode(plaintext: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(plaintext)
    except (UnicodeDecodeError, ValueError, RecursionError):
        # RecursionError: JSON nested deeper than the interpreter's stack allows
        raise ChannelError("bad-json") from None
    if not isinstance(obj, dict):
        raise ChannelError("bad-json")
    return obj


class FrameReader:
    """Splits a byte stream into frame bodies; a frame above `max_size` is refused from its
    length prefix alone, before its body is read."""

    def __init__(self, max_size: int = MAX_FRAME) -> None:
        self.max_size = max_size
        self._buffer = bytearray()

    def feed(self, data: bytes) -> Iterator[bytes]:
        """The complete frame bodies that `data` finishes, in order. Lazily: a limit changed
        between two bodies (at the end of the handshake) applies to the next one."""
        buffer = self._buffer
        if not buffer and len(data) >= _LENGTH.size:
            # the common case: exactly one whole frame, taken without copying into the buffer
            (length,) = _LENGTH.unpack_from(data)
            if length + _LENGTH.size == len(data) and length <= self.max_size:
                yield data[_LENGTH.size :]
                return
        buffer += data
        while len(buffer) >= _LENGTH.size:
            (length,) = _LENGTH.unpack_from(buffer)
            if length > self.max_size:
                raise ChannelError("too-large", f"{length} bytes")
            end = _LENGTH.size + length
            if len(buffer) < end:
                break
            body = bytes(buffer[_LENGTH.size : end])
            del buffer[:end]
            yield body


def _frame(body: bytes) -> bytes:
    return _LENGTH.pack(len(body)) + body


def _proof(key: bytes, role: bytes, host: bytes, nc: bytes, ns: bytes) -> bytes:
    return hmac.digest(key, b"ccs/v1/" + role + b"|" + host + nc + ns, "sha256")


def hkdf_sha256(ikm: bytes, salt: bytes, infos: tuple[bytes, ...]) -> list[bytes]:
    """HKDF-SHA256 (RFC 5869) with a 32-byte output, for each `info`: one extract for all,
    then one HMAC each (a 32-byte output is the first block of the expand). Equal to
    cryptography's HKDF, checked in the tests; a third of its cost per connection."""
    prk = hmac.digest(salt, ikm, "sha256")
    return [hmac.digest(prk, info + b"\x01", "sha256") for info in infos]


def _session(key: bytes, host_id: str, nc: bytes, ns: bytes, *, client: bool) -> Session:
    host = host_id.encode()
    c2s, s2c = hkdf_sha256(key, nc + ns, (b"ccs/v1/c2s|" + host, b"ccs/v1/s2c|" + host))
    return Session(host_id, c2s, s2c) if client else Session(host_id, s2c, c2s)


def _host_bytes(host_id: str) -> bytes:
    host = host_id.encode()
    if not 1 <= len(host) <= 255:
        raise ValueError("host_id: must be 1..255 bytes of UTF-8")
    return host


class ClientHandshake:
    """The client's half of the handshake, without I/O: send `hello()`, then `answer()` the
    server's reply with the proof it returns, and use the session."""

    def __init__(self, host_id: str, key: bytes) -> None:
        self.host_id = host_id
        self._host = _host_bytes(host_id)
        self._key = key
        self._nc = os.urandom(NONCE_SIZE)

    def hello(self) -> bytes:
        return _frame(MAGIC + bytes([len(self._host)]) + self._host + self._nc)

    def answer(self, reply: bytes) -> tuple[bytes, Session]:
        """Check the server's proof; the PROOF frame to send and the session."""
        if len(reply) != NONCE_SIZE + PROOF_SIZE:
            raise ChannelError("bad-frame", "server reply")
        ns, proof = reply[:NONCE_SIZE], reply[NONCE_SIZE:]
        if not hmac.compare_digest(proof, _proof(self._key, b"server", self._host, self._nc, ns)):
            raise ChannelError("bad-proof", "server proof")
        mine = _frame(_proof(self._key, b"client", self._host, self._nc, ns))
        return mine, _session(self._key, self.host_id, self._nc, ns, client=True)


class ServerHandshake:
    """The server's half, without I/O: `reply()` to the HELLO, then `confirm()` the client's
    PROOF to get the session.

    Every HELLO gets the same kind of answer, known host or not: for an unknown host id a
    decoy key (random, the server's own) stands in for the host's, so neither the reply nor
    its timing tells a peer without keys which host ids exist. The refusal comes at the proof.
    """

    def __init__(self, lookup: Lookup, decoy: bytes) -> None:
        self._lookup = lookup
        self._decoy = decoy
        self.host_id: str | None = None
        self.known = False
        self._key = b""
        self._nc = self._ns = b""

    def reply(self, hello: bytes) -> bytes:
        self.host_id, self._nc = _parse_hello(hello)
        key = self._lookup(self.host_id)
        self.known = key is not None
        self._key = key if key is not None else self._decoy
        self._ns = os.urandom(NONCE_SIZE)
        return _frame(self._ns + self._proof(b"server"))

    def confirm(self, proof: bytes) -> Session:
        assert self.host_id is not None, "reply() first"
        if not hmac.compare_digest(proof, self._proof(b"client")) or not self.known:
            raise ChannelError("bad-proof" if self.known else "unknown-host", self.host_id)
        return _session(self._key, self.host_id, self._nc, self._ns, client=False)

    def _proof(self, role: bytes) -> bytes:
        assert self.host_id is not None
        return _proof(self._key, role, self.host_id.encode(), self._nc, self._ns)


def _parse_hello(hello: bytes) -> tuple[str, bytes]:
    if hello[: len(MAGIC)] != MAGIC:
        raise ChannelError("bad-version", "hello magic")
    if len(hello) < len(MAGIC) + 1:
        raise ChannelError("bad-frame", "hello")
    host_len = hello[len(MAGIC)]
    start = len(MAGIC) + 1
    if host_len == 0 or len(hello) != start + host_len + NONCE_SIZE:
        raise ChannelError("bad-frame", "hello")
    try:
        host_id = hello[start : start + host_len].decode()
    except UnicodeDecodeError:
        raise ChannelError("bad-frame", "hello host id") from None
    return host_id, hello[start + host_len :]


# -- the same channel over asyncio streams (tests, tools) -----------------------------------


async def read_frame(reader: asyncio.StreamReader, max_size: int = MAX_FRAME) -> bytes:
    """Read one length-prefixed frame body; refuse bodies above max_size without reading them."""
    try:
        prefix = await reader.readexactly(_LENGTH.size)
        (length,) = _LENGTH.unpack(prefix)
        if length > max_size:
            raise ChannelError("too-large", f"{length} bytes")
        return await reader.readexactly(length)
    except (asyncio.IncompleteReadError, ConnectionError):
        raise ChannelError("closed") from None


async def send_frame(writer: asyncio.StreamWriter, frame: bytes) -> None:
    """Write one complete frame and wait for the buffer to drain."""
    try:
        writer.write(frame)
        await writer.drain()
    except (ConnectionError, RuntimeError):
        # RuntimeError: the transport was already closed under us
        raise ChannelError("closed") from None


async def _within(timeout: float, steps: Any) -> Session:
    try:
        async with asyncio.timeout(timeout):
            return await steps
    except TimeoutError:
        raise ChannelError("timeout", "handshake") from None


async def client_handshake(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    host_id: str,
    key: bytes,
    timeout: float = HANDSHAKE_TIMEOUT,
) -> Session:
    """Prove knowledge of the host key to the agent, check its proof, return the session."""
    return await _within(timeout, _client_steps(reader, writer, ClientHandshake(host_id, key)))


async def _client_steps(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, handshake: ClientHandshake
) -> Session:
    await send_frame(writer, handshake.hello())
    proof, session = handshake.answer(await read_frame(reader, HANDSHAKE_MAX))
    await send_frame(writer, proof)
    return session


async def server_handshake(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    lookup: Lookup,
    timeout: float = HANDSHAKE_TIMEOUT,
) -> Session:
    """Answer a HELLO, check the client's proof, return the session."""
    handshake = ServerHandshake(lookup, os.urandom(32))
    return await _within(timeout, _server_steps(reader, writer, handshake))


async def _server_steps(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, handshake: ServerHandshake
) -> Session:
    await send_frame(writer, handshake.reply(await read_frame(reader, HANDSHAKE_MAX)))
    return handshake.confirm(await read_frame(reader, HANDSHAKE_MAX))
