"""uvicorn's httptools protocol, with each answer's head and body sent in one write.

uvicorn writes a response's status line and headers when the app starts the response, and the body when the app
sends it: two write calls, and with TCP_NODELAY two segments, for every answer of this API (a few hundred bytes
each). Holding the head until the body comes (the same task step, for every route here) makes it one write and
one segment. Measured on SQLite in interleaved runs: the checkout mix went from 4,130-4,400 to 4,640-4,840 req/s
and the server's system time per request from about 66 to 57 µs.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_HEAD = b"HTTP/"


class _HeadWithBody:
    """A transport that holds a response head back until the next write (or the end of this loop iteration) and
    sends both at once; everything else passes straight through, in order."""

    __slots__ = ("_transport", "_loop", "_held")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop):
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held + data)
        elif data[:5] == _HEAD:
            self._held = bytes(data)
            self._loop.call_soon(self._flush)  # a head with no body after it still goes out
        else:
            self._transport.write(data)

    def _flush(self) -> None:
        held, self._held = self._held, None
        if held is not None and not self._transport.is_closing():
            self._transport.write(held)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        self._held = None
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class HttpProtocol(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_HeadWithBody(transport, self.loop))  # type: ignore[arg-type]
