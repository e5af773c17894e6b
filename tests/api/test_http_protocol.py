"""The server's HTTP protocol (api/http_protocol.py) sends each answer's head and body in one write, and never
holds back, reorders or drops anything."""

from __future__ import annotations

import asyncio
from typing import Any

from loyalty.api.http_protocol import _HeadWithBody

HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"


class FakeTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 1)}.get(name, default)


def run(steps: Any) -> FakeTransport:
    async def main() -> FakeTransport:
        fake = FakeTransport()
        steps(_HeadWithBody(fake, asyncio.get_running_loop()))  # type: ignore[arg-type]
        await asyncio.sleep(0)  # one loop iteration: anything held is flushed
        await asyncio.sleep(0)
        return fake

    return asyncio.run(main())


def test_a_head_and_the_body_after_it_go_in_one_write():
    fake = run(lambda t: (t.write(HEAD), t.write(b"{}")))
    assert fake.writes == [HEAD + b"{}"]


def test_a_head_with_no_body_after_it_still_goes_out():
    fake = run(lambda t: t.write(HEAD))
    assert fake.writes == [HEAD]


def test_other_writes_pass_straight_through_in_order():
    fake = run(lambda t: (t.write(b"chunk one"), t.write(HEAD), t.write(b"{}"), t.write(b"more")))
    assert fake.writes == [b"chunk one", HEAD + b"{}", b"more"]


def test_closing_sends_a_held_head_first_and_aborting_drops_it():
    closed = run(lambda t: (t.write(HEAD), t.close()))
    assert closed.writes == [HEAD] and closed.closed
    aborted = run(lambda t: (t.write(HEAD), t.abort()))
    assert aborted.writes == [] and aborted.aborted


def test_everything_else_is_the_transport_s_own():
    loop = asyncio.new_event_loop()
    try:
        wrapped = _HeadWithBody(FakeTransport(), loop)  # type: ignore[arg-type]
        assert wrapped.get_extra_info("peername") == ("127.0.0.1", 1)
        assert wrapped.is_closing() is False
    finally:
        loop.close()
