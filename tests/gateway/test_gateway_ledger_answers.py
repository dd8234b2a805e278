"""No ledger, no disclosure — whenever and however the ledger answers. In-process: the
ledger's callback comes at once, on the next loop turn or later; identity reaches the origin
exactly when the answer was True, on every request of one keep-alive connection."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from hypothesis import given, settings
from hypothesis import strategies as st
from inprocess import FakeTransport, client

from linewarden.bindings import Binding
from linewarden.bindings.memory import MemoryStore
from linewarden.claims import Secrets
from linewarden.decide import DisclosureRecord, Rules, Settings
from linewarden.policy.load import parse_policy
from linewarden.proxy.server import Gateway
from linewarden.proxy.upstream import Pool, UpstreamConnection

POLICY = """
[[partners]]
id = "bank"
purpose = "billing"
hosts = ["partner.test"]
allow_raw_msisdn = true
[partners.headers]
X-Up-Calling-Line-Id = "msisdn"
"""
MSISDN = "447400900123"
REQUEST = b"GET http://partner.test/a HTTP/1.1\r\nHost: partner.test\r\nX-MSISDN: 1\r\n\r\n"
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

When = str  # "now": inside submit; "soon": next loop turn; "later": after a timer


class ScriptedLedger:
    """Answers each disclosure as the plan says; a plan step is (when, ok)."""

    def __init__(self, plan: list[tuple[When, bool]]) -> None:
        self.plan = list(plan)
        self.records: list[DisclosureRecord] = []

    def submit(self, rec: DisclosureRecord, done: Callable[[bool], None]) -> None:
        self.records.append(rec)
        when, ok = self.plan.pop(0)
        loop = asyncio.get_running_loop()
        if when == "now":
            done(ok)
        elif when == "soon":
            loop.call_soon(done, ok)
        else:
            loop.call_later(0.002, done, ok)

    async def record(self, rec: DisclosureRecord) -> bool:  # the Recorder protocol
        raise AssertionError("the proxy must use submit()")


class BrokenLedger:
    """A recorder without a callback form whose record() raises."""

    async def record(self, rec: DisclosureRecord) -> bool:
        raise OSError("ledger disk gone")


def gateway(recorder: object) -> tuple[Gateway, FakeTransport]:
    policy, _ = parse_policy(POLICY)
    store = MemoryStore()
    store.put(Binding("127.0.0.2", MSISDN))
    gw = Gateway(Rules(policy, Settings(Secrets(b"p", b"l"))), store,
                 recorder,  # type: ignore[arg-type]
                 resolve={"partner.test": "127.0.0.1:9"})
    gw.loop = asyncio.get_running_loop()
    gw.pool = Pool(gw.loop, 1.0)
    upstream = UpstreamConnection(gw.pool, ("127.0.0.1", 9))
    upstream_transport = FakeTransport()
    upstream.connection_made(upstream_transport)  # type: ignore[arg-type]
    gw.pool.release(upstream)
    return gw, upstream_transport


async def heads_sent(plan: list[tuple[When, bool]]) -> tuple[list[bytes], bytes, int]:
    """Each request's head as the origin received it, what the client got, and how many
    records the ledger was given."""
    ledger = ScriptedLedger(plan)
    gw, origin = gateway(ledger)
    conn, transport = client(gw)
    heads = []
    for _ in plan:
        before = len(origin.out)
        conn.data_received(REQUEST)
        for _ in range(100):  # the ledger's answer may take a few loop turns
            if len(origin.out) > before:
                break
            await asyncio.sleep(0.001)
        heads.append(b"".join(origin.out[before:]))
        upstream = conn.active.upstream if conn.active else None
        assert upstream is not None, "the request never went upstream"
        upstream.data_received(RESPONSE)
    await gw.close()
    return heads, transport.written, len(ledger.records)


@settings(max_examples=40, deadline=None)
@given(plan=st.lists(st.tuples(st.sampled_from(["now", "soon", "later"]), st.booleans()),
                     min_size=1, max_size=6))
def test_identity_goes_out_exactly_when_the_ledger_said_true(
        plan: list[tuple[When, bool]]) -> None:
    heads, to_client, records = asyncio.run(heads_sent(plan))
    assert records == len(plan)  # one record per disclosure, never a retry or a skip
    for (_, ok), head in zip(plan, heads, strict=True):
        assert head.startswith(b"GET /a HTTP/1.1\r\n")
        assert (f"X-Up-Calling-Line-Id: {MSISDN}".encode() in head) is ok
        assert b"X-MSISDN" not in head  # the forged header never survives either way
    assert to_client.count(b"HTTP/1.1 200 OK") == len(plan)


def test_a_ledger_that_raises_withholds_identity_and_still_answers() -> None:
    async def scenario() -> tuple[bytes, bytes]:
        gw, origin = gateway(BrokenLedger())
        conn, transport = client(gw)
        conn.data_received(REQUEST)
        for _ in range(100):
            if origin.out:
                break
            await asyncio.sleep(0.001)
        assert conn.active is not None and conn.active.upstream is not None
        conn.active.upstream.data_received(RESPONSE)
        await gw.close()
        return b"".join(origin.out), transport.written

    head, to_client = asyncio.run(scenario())
    assert head.startswith(b"GET /a HTTP/1.1\r\n") and MSISDN.encode() not in head
    assert to_client.startswith(b"HTTP/1.1 200 OK")
