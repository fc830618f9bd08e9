"""The channel on its own: handshake, frame layout, and every way a frame is refused."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import struct
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from agent.channel import (
    Session,
    client_handshake,
    encode_frame,
    read_frame,
    server_handshake,
)
from agent.errors import ChannelError

KEY = os.urandom(32)


def _pair(**session_options: Any) -> tuple[Session, Session]:
    """A client and server session agreed over a real handshake on a local socket."""

    async def run() -> tuple[Session, Session]:
        server_side: asyncio.Future[Session] = asyncio.get_running_loop().create_future()

        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            server_side.set_result(await server_handshake(reader, writer, {"h1": KEY}.get))

        server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        client = await client_handshake(reader, writer, "h1", KEY)
        result = client, await server_side
        writer.close()
        server.close()
        return result

    return asyncio.run(run())


def _body(frame: bytes) -> bytes:
    (length,) = struct.unpack(">I", frame[:4])
    assert length == len(frame) - 4
    return frame[4:]


def test_handshake_gives_matching_sessions_both_ways() -> None:
    client, server = _pair()
    assert server.open(_body(client.seal({"op": "health", "rid": 1}))) == {"op": "health", "rid": 1}
    assert client.open(_body(server.seal({"ok": True}))) == {"ok": True}


def test_frame_layout_is_version_sequence_host_then_ciphertext() -> None:
    client, _ = _pair()
    body = _body(client.seal({"a": 1}))
    version, seq, host_len = struct.unpack(">BQB", body[:10])
    assert (version, seq, host_len) == (1, 1, 2)
    assert body[10:12] == b"h1"
    assert b'"a"' not in body  # the payload is encrypted
    assert struct.unpack(">Q", _body(client.seal({"a": 2}))[1:9])[0] == 2


def test_each_direction_has_its_own_key() -> None:
    client, server = _pair()
    # a frame the server sent cannot be reflected back at the server
    with pytest.raises(ChannelError) as error:
        server.open(_body(server.seal({"ok": True})))
    assert error.value.reason == "bad-tag"


@pytest.mark.parametrize("offset", [-1, -20, 12, 10, 3, 1])
def test_any_flipped_byte_is_refused(offset: int) -> None:
    client, server = _pair()
    body = bytearray(_body(client.seal({"op": "health"})))
    body[offset] ^= 0x01
    with pytest.raises(ChannelError) as error:
        server.open(bytes(body))
    # 1 and 3 hit the sequence number, 10 the host id: both authenticated as associated data
    assert error.value.reason == "bad-tag"


def test_replayed_and_reordered_frames_are_refused() -> None:
    client, server = _pair()
    first, second = _body(client.seal({"n": 1})), _body(client.seal({"n": 2}))
    with pytest.raises(ChannelError, match="replay"):
        server.open(second)  # skips 1
    client, server = _pair()
    first = _body(client.seal({"n": 1}))
    server.open(first)
    with pytest.raises(ChannelError, match="replay"):
        server.open(first)


def test_header_naming_another_host_is_refused_after_authentication() -> None:
    client, server = _pair()
    frame = encode_frame(client.sender, 1, "h2", b'{"op":"health"}')
    with pytest.raises(ChannelError) as error:
        server.open(_body(frame))
    assert error.value.reason == "wrong-host"


def test_unknown_version_is_refused() -> None:
    client, server = _pair()
    frame = encode_frame(client.sender, 1, "h1", b"{}", version=2)
    with pytest.raises(ChannelError, match="bad-version"):
        server.open(_body(frame))


def test_authenticated_json_nested_too_deeply_is_refused_like_any_malformed_frame() -> None:
    client, server = _pair()
    deep = b'{"a":' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    with pytest.raises(ChannelError, match="bad-json"):
        server.open(_body(encode_frame(client.sender, 1, "h1", deep)))


def test_authenticated_non_object_is_refused() -> None:
    client, server = _pair()
    with pytest.raises(ChannelError, match="bad-json"):
        server.open(_body(encode_frame(client.sender, 1, "h1", b"[1,2]")))


def test_too_large_frame_is_refused_before_reading_its_body() -> None:
    async def run() -> None:
        reader = asyncio.StreamReader()
        reader.feed_data(struct.pack(">I", 5 * 1024 * 1024) + b"x" * 10)
        with pytest.raises(ChannelError, match="too-large"):
            await read_frame(reader, 4 * 1024 * 1024)

    asyncio.run(run())


def test_sealing_an_oversized_message_leaves_no_sequence_gap() -> None:
    client, server = _pair()
    client.max_size = 100
    with pytest.raises(ChannelError, match="too-large"):
        client.seal({"x": "y" * 200})
    assert server.open(_body(client.seal({"x": 1}))) == {"x": 1}


async def _raw_handshake(port: int, host: bytes, key: bytes) -> tuple[bytes, bytes, bytes]:
    """Speak the handshake by hand, as PROTOCOL.md describes it; returns Nc, Ns and server proof."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    nc = os.urandom(32)
    hello = b"CCS1" + bytes([len(host)]) + host + nc
    writer.write(struct.pack(">I", len(hello)) + hello)
    reply = await read_frame(reader)
    ns, server_proof = reply[:32], reply[32:]
    client_proof = hmac.new(key, b"ccs/v1/client|" + host + nc + ns, hashlib.sha256).digest()
    writer.write(struct.pack(">I", 32) + client_proof)
    await writer.drain()
    writer.close()
    return nc, ns, server_proof


def test_handshake_bytes_match_the_written_protocol() -> None:
    async def run() -> tuple[bytes, bytes, bytes, Session]:
        done: asyncio.Future[Session] = asyncio.get_running_loop().create_future()

        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            done.set_result(await server_handshake(reader, writer, {"h1": KEY}.get))

        server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
        nc, ns, proof = await _raw_handshake(server.sockets[0].getsockname()[1], b"h1", KEY)
        session = await done
        server.close()
        return nc, ns, proof, session

    nc, ns, proof, session = asyncio.run(run())
    assert proof == hmac.new(KEY, b"ccs/v1/server|h1" + nc + ns, hashlib.sha256).digest()
    # session keys: HKDF-SHA256(K, salt=Nc+Ns, info="ccs/v1/c2s|h1"), written out by hand
    prk = hmac.new(nc + ns, KEY, hashlib.sha256).digest()
    c2s = hmac.new(prk, b"ccs/v1/c2s|h1\x01", hashlib.sha256).digest()
    frame = encode_frame(AESGCM(c2s), 1, "h1", b'{"op":"health"}')
    assert session.open(_body(frame)) == {"op": "health"}


def test_client_refuses_a_server_that_does_not_know_the_key() -> None:
    async def run() -> None:
        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with pytest.raises(ChannelError):
                await server_handshake(reader, writer, lambda host: os.urandom(32))

        server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", server.sockets[0].getsockname()[1]
        )
        with pytest.raises(ChannelError) as error:
            await client_handshake(reader, writer, "h1", KEY)
        assert error.value.reason == "bad-proof"
        writer.close()
        server.close()

    asyncio.run(run())


def test_handshake_times_out() -> None:
    async def run() -> None:
        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await asyncio.sleep(5)  # never answers

        server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", server.sockets[0].getsockname()[1]
        )
        with pytest.raises(ChannelError, match="timeout"):
            await client_handshake(reader, writer, "h1", KEY, timeout=0.2)
        writer.close()
        server.close()

    asyncio.run(run())
