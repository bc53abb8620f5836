"""A minimal websocket client (RFC 6455) on asyncio streams, for tests that talk to a real daphne.

Not autobahn: its asyncio flavour cannot share a process with Django, whose ``daphne`` app installs the
Twisted one (txaio allows one per process). It does what a browser's socket does for the live pages: a
handshake with the session cookie and the site's Origin, text messages in, pings answered, close frames
reported with their code.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import struct
from urllib.parse import urlparse

TEXT, CLOSE, PING, PONG = 0x1, 0x8, 0x9, 0xA


class Closed(Exception):
    """The server closed the socket (``code``: the close frame's code, 1006 if the connection just ended)."""

    def __init__(self, code: int) -> None:
        super().__init__(f"socket closed with {code}")
        self.code = code


class WebSocket:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, server: str, path: str, cookie: str = "") -> WebSocket:
        """Open ``path`` on ``server`` (``http://host:port``) as a page of that server would; raise ``Closed``
        with code 1006 if the handshake is not answered with 101."""
        url = urlparse(server)
        reader, writer = await asyncio.open_connection(url.hostname, url.port)
        key = base64.b64encode(os.urandom(16)).decode()
        headers = [
            f"GET {path} HTTP/1.1",
            f"Host: {url.netloc}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
            f"Origin: {server}",
            *([f"Cookie: {cookie}"] if cookie else []),
        ]
        writer.write(("\r\n".join(headers) + "\r\n\r\n").encode())
        try:
            response = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            raise Closed(1006) from None
        if not response.startswith(b"HTTP/1.1 101"):
            writer.close()
            raise Closed(1006)
        return cls(reader, writer)

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)  # a client masks every frame
        size = len(payload)
        header = bytes([0x80 | opcode])
        if size < 126:
            header += bytes([0x80 | size])
        elif size < 1 << 16:
            header += bytes([0x80 | 126]) + struct.pack("!H", size)
        else:
            header += bytes([0x80 | 127]) + struct.pack("!Q", size)
        self.writer.write(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    async def _frame(self) -> tuple[bool, int, bytes]:
        first, second = await self.reader.readexactly(2)
        size = second & 0x7F
        if size == 126:
            (size,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif size == 127:
            (size,) = struct.unpack("!Q", await self.reader.readexactly(8))
        return bool(first & 0x80), first & 0x0F, await self.reader.readexactly(size)  # a server does not mask

    async def receive(self) -> dict:
        """The next message, decoded from JSON; pings are answered on the way. Raises ``Closed``."""
        parts: list[bytes] = []
        try:
            while True:
                final, opcode, payload = await self._frame()
                if opcode == PING:
                    self._send_frame(PONG, payload)
                elif opcode == CLOSE:
                    raise Closed(struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005)
                elif opcode != PONG:
                    parts.append(payload)  # a text frame or its continuations
                    if final:
                        return json.loads(b"".join(parts))
        except (asyncio.IncompleteReadError, ConnectionError):
            raise Closed(1006) from None

    async def close(self) -> None:
        if not self.writer.is_closing():
            self._send_frame(CLOSE, struct.pack("!H", 1000))
            self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()
