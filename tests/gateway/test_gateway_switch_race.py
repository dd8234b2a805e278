"""The kill switch wins a race with the ledger: a trip that lands while a disclosure's row is
being committed stops that disclosure too. In-process: a real Gateway on a real socket, a
recorder that trips the switch before it answers."""

from __future__ import annotations

import asyncio

import pytest

from linewarden.bindings import Binding
from linewarden.bindings.memory import MemoryStore
from linewarden.claims import Secrets
from linewarden.decide import DisclosureRecord, Rules, Settings
from linewarden.policy.load import parse_policy
from linewarden.proxy.server import Gateway

POLICY = """
[[partners]]
id = "bank"
purpose = "billing"
hosts = ["partner.test"]
allow_raw_msisdn = true
[partners.headers]
X-Up-Calling-Line-Id = "msisdn"
"""


class TrippingRecorder:
    """Commits the row, but the switch trips while it does (or not, for the control)."""

    def __init__(self, switch: dict[str, bool], trip: bool) -> None:
        self.switch, self.trip, self.rows = switch, trip, 0

    async def record(self, rec: DisclosureRecord) -> bool:
        await asyncio.sleep(0.01)
        self.switch["tripped"] = self.trip
        self.rows += 1
        return True


async def _origin() -> tuple[asyncio.Server, int, list[bytes]]:
    heads: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], heads


async def _one_request(trip: bool) -> tuple[bytes, list[bytes], int]:
    origin, origin_port, heads = await _origin()
    policy, _ = parse_policy(POLICY)
    store = MemoryStore()
    store.put(Binding("127.0.0.1", "447400900123"))
    switch = {"tripped": False}
    recorder = TrippingRecorder(switch, trip)
    gateway = Gateway(Rules(policy, Settings(Secrets(b"p", b"l"))), store, recorder,
                      resolve={"partner.test": f"127.0.0.1:{origin_port}"},
                      switch_tripped=lambda: switch["tripped"])
    server = await gateway.start("127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET http://partner.test/ HTTP/1.1\r\nHost: partner.test\r\n"
                     b"Connection: close\r\n\r\n")
        response = await asyncio.wait_for(reader.read(), 10)
        writer.close()
    finally:
        await gateway.close()
        origin.close()
    return response, heads, recorder.rows


@pytest.mark.parametrize("trip", [False, True])
def test_a_trip_during_the_ledger_commit_stops_that_disclosure(trip: bool) -> None:
    response, heads, rows = asyncio.run(_one_request(trip))
    assert response.startswith(b"HTTP/1.1 200 OK")
    assert rows == 1 and len(heads) == 1
    sent = b"x-up-calling-line-id: 447400900123" in heads[0].lower()
    assert sent is not trip  # the control (no trip) proves the header would have gone
