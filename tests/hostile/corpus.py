"""The hostile-input corpus: raw HTTP/1.1 requests, each with its category and the outcome
the gateway owes us (issue 9, item 1).

A case is data: the bytes a client sends (with `@M@` standing for a fresh marker, so the
origin's record of this case can be found), the client address, and what must happen:

    reject  a 4xx status line, exactly one response, the connection closed, and nothing
            of this case at the origin;
    clean   every request answered 2xx, and the origin sees exactly `len(partners)`
            well-framed requests, carrying no client-sent identity; the n-th carries the
            claims of `partners[n]` (None: no identity at all);
    either  one or the other (framing the RFC lets a proxy normalise or refuse);
    safe    any refusal (4xx or 5xx) with nothing at the origin, or clean.

Nothing here talks to a socket: `run.py` sends and judges, the tests call it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from lwtest import MSISDN_1

FORGED = "447700900999"  # the number a fraudster wants a partner to see
FORGED_B = FORGED.encode()
FULLWIDTH_DIGITS = "".join(chr(0xFF10 + int(d)) for d in FORGED)  # U+FF10..U+FF19
SMUGGLED = "SMUGGLED"  # in the target of every request that must never reach an origin
BOUND = "127.0.0.1"  # bound to MSISDN_1 by lwtest.gateway_config
UNBOUND = "127.0.0.9"

Outcome = Literal["reject", "clean", "either", "safe"]
PartnerId = Literal["billing", "age", "paths"] | None

# Partners of the hostile gateway, on top of lwtest.DEFAULT_PARTNERS (billing-partner on
# partner.test with the raw number, age-partner on pseudo.test and *.pseudo.test).
EXTRA_PARTNERS = """
[[partners]]
id = "paths-partner"
purpose = "billing"
hosts = ["paths.test"]
paths = ["/billing"]
ports = [80]
[partners.headers]
X-Paths-Pseudonym = "pseudonym"
"""

# Names the hostile gateway resolves to the echo origin (beyond lwtest's own list).
EXTRA_HOSTS = ("paths.test", "partnertest.test", "apseudo.test", "pseudo.test.evil.test",
               "partner.tests", "b.a.pseudo.test", "partner.test.", "evil.partner.test")

# The header a partner's claims arrive in, by partner.
PARTNER_HEADERS: dict[str, tuple[str, ...]] = {
    "billing": ("x-up-calling-line-id",),
    "age": ("x-subscriber-pseudonym", "x-operator"),
    "paths": ("x-paths-pseudonym",),
}
EXPECTED_VALUES: dict[str, dict[str, str]] = {
    "billing": {"x-up-calling-line-id": MSISDN_1},
    "age": {"x-operator": "234-10"},
}


@dataclass(frozen=True)
class Case:
    name: str
    category: str  # forged-identity | framing | host-match | destination
    group: str  # finer: spelling, position, keep-alive, cl-te, chunk, ...
    payload: tuple[bytes, ...]  # sent one after the other (a short pause between)
    outcome: Outcome
    partners: tuple[PartnerId, ...] = (None,)  # clean: one entry per request, in order
    source: str = BOUND
    note: str = ""

    def render(self, marker: str, origin_port: int) -> tuple[bytes, ...]:
        m, port = marker.encode(), str(origin_port).encode()
        return tuple(p.replace(b"@M@", m).replace(b"@P@", port) for p in self.payload)


def req(method: str = "GET", host: str = "other.test", *, path: str = "/@M@",
        headers: list[tuple[str, str]] | None = None, body: bytes = b"",
        version: str = "1.1", mode: str = "forward", close: bool = True,
        chunked: bool = False, trailers: list[tuple[str, str]] | None = None,
        host_header: str | None = None) -> bytes:
    """One well-formed request; `headers` are added after Host, in order."""
    target = path if mode == "transparent" else f"http://{host}{path}"
    lines = [f"{method} {target} HTTP/{version}"]
    if host_header is not None or version == "1.1" or mode == "transparent":
        lines.append(f"Host: {host if host_header is None else host_header}")
    lines += [f"{n}: {v}" for n, v in headers or []]
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    elif body:
        lines.append(f"Content-Length: {len(body)}")
    if close:
        lines.append("Connection: close")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")
    if chunked:
        tail = "".join(f"{n}: {v}\r\n" for n, v in trailers or []).encode()
        return head + (b"%x\r\n%b\r\n" % (len(body), body) if body else b"") + b"0\r\n" + \
            tail + b"\r\n"
    return head + body


# ---------------------------------------------------------------- forged identity

# PRODUCT.md's reference list, in the order given there.
KNOWN = (
    "x-up-calling-line-id", "x-msisdn", "msisdn", "x-nokia-msisdn", "x-wap-msisdn",
    "x-h3g-msisdn", "x-up-subno", "x-imsi", "x-nokia-imsi", "x-uidh", "x-acr", "x-vf-acr",
    "x-hts-clid", "x-nx-clid", "x-wap-3gpp-msisdn", "x-wap-3gpp-imsi",
    "x-wap-network-client-msisdn", "user-identity-forward-msisdn", "x-msp-msisdn",
    "x-wte-msisdn", "x-fh-msisdn", "mscope-msisdn", "i-msisdn", "x-bam-msisdn",
    "x-up-vodacomgw-subid", "x-jinny-cid", "x-orange-id", "x-access-subnym",
    "x-internet-msisdn", "x-msisdn-alias", "x-h3g-party-id", "x-nokia-alias",
    "x-subscriber-id", "x-forwarded-msisdn", "x-imei", "x-att-deviceid",
)


def _title(name: str) -> str:
    return "-".join(p[:1].upper() + p[1:] for p in name.split("-"))


def _mixed(name: str) -> str:
    """Alternate `_`, `.` and `~` for the hyphens, and alternate letter case."""
    seps = "_.~"
    out, k = [], 0
    for i, ch in enumerate(name):
        if ch == "-":
            out.append(seps[k % 3])
            k += 1
        else:
            out.append(ch.upper() if i % 2 else ch)
    return "".join(out) if "-" in name else name.upper() + "_"


SPELLINGS = {
    "upper": str.upper,
    "title": _title,
    "underscore": lambda n: n.upper().replace("-", "_"),
    "dot": lambda n: n.replace("-", "."),
    "tilde": lambda n: n.replace("-", "~"),
    "mixed": _mixed,
}

# Where each spelling is sent, round-robin: the partner itself (which must get the real
# number, once), a non-partner, the pseudonym partner, and transparent mode.
_TARGETS: tuple[tuple[str, str, PartnerId], ...] = (
    ("partner.test", "forward", "billing"), ("other.test", "forward", None),
    ("pseudo.test", "forward", "age"), ("partner.test", "transparent", "billing"),
    ("other.test", "transparent", None), ("a.pseudo.test", "transparent", "age"),
)


def forged_identity() -> Iterator[Case]:
    k = 0
    for name in KNOWN:
        for label, spell in SPELLINGS.items():
            host, mode, partner = _TARGETS[k % len(_TARGETS)]
            k += 1
            spelled = spell(name)
            if spelled == name and label != "title":
                continue
            yield Case(f"{label}:{spelled}@{host}/{mode}", "forged-identity", "spelling",
                       (req(host=host, mode=mode, headers=[(spelled, FORGED)]),), "clean",
                       (partner,))

    one = [("X-MSISDN", FORGED)]
    partner_hdr = [("X-Up-Calling-Line-Id", FORGED)]
    g = "suffix"
    for name in ("Foo-Msisdn", "X-Billing-Subno", "X-Device-Imei", "X-Op-Subid",
                 "X-Caller-Clid", "X-My-CallingLineId", "X-CallingLine", "Client-IMSI",
                 "X-Sub-ACR", "X-Verizon-UIDH", "Subscriber-ID", "XMSISDN", "X--MSISDN",
                 "x-msisdn-", "-x-msisdn", "X-MSISDN1-msisdn"):
        yield Case(f"{g}:{name}", "forged-identity", g,
                   (req(host="partner.test", headers=[(name, FORGED)]),), "clean", ("billing",))
    for name in ("X!MSISDN", "X#MSISDN", "X$MSISDN", "X%MSISDN", "X&MSISDN", "X'MSISDN",
                 "X*MSISDN", "X+MSISDN", "X^MSISDN", "X`MSISDN", "X|MSISDN"):
        yield Case(f"tchar-alias:{name}", "forged-identity", "tchar-alias",
                   (req(host="other.test", headers=[(name, FORGED)]),), "clean")

    g = "position"
    filler = [(f"X-Filler-{i}", "v") for i in range(20)]
    for host, partner in (("partner.test", "billing"), ("other.test", None)):
        yield Case(f"{g}:first@{host}", "forged-identity", g,
                   (f"GET http://{host}/@M@ HTTP/1.1\r\nX-MSISDN: {FORGED}\r\nHost: {host}"
                    f"\r\nConnection: close\r\n\r\n".encode(),), "clean", (partner,))
        yield Case(f"{g}:last@{host}", "forged-identity", g,
                   (req(host=host, headers=[*filler, ("X_MSISDN", FORGED)]),), "clean",
                   (partner,))
        yield Case(f"{g}:duplicate@{host}", "forged-identity", g,
                   (req(host=host, headers=one * 3 + partner_hdr * 2),), "clean", (partner,))
        yield Case(f"{g}:every-name@{host}", "forged-identity", g,
                   (req(host=host, headers=[(n, FORGED) for n in KNOWN]),), "clean",
                   (partner,))
        yield Case(f"{g}:partner-header-empty@{host}", "forged-identity", g,
                   (req(host=host, headers=[("X-Up-Calling-Line-Id", "")]),), "clean",
                   (partner,))
        yield Case(f"{g}:connection-nominated@{host}", "forged-identity", g,
                   (req(host=host, headers=[("Connection", "X-Innocent"),
                                            ("X-Innocent", FORGED)]),), "clean", (partner,))
    yield Case(f"{g}:age-partner-own-headers", "forged-identity", g,
               (req(host="pseudo.test", headers=[("X-Subscriber-Pseudonym", FORGED),
                                                 ("X-Operator", FORGED)]),), "clean", ("age",))
    yield Case(f"{g}:billing-header-to-age-partner", "forged-identity", g,
               (req(host="pseudo.test", headers=partner_hdr),), "clean", ("age",))
    yield Case(f"{g}:unbound-client@partner", "forged-identity", g,
               (req(host="partner.test", headers=one + partner_hdr),), "clean", (None,),
               source=UNBOUND)
    yield Case(f"{g}:unbound-client-transparent", "forged-identity", g,
               (req(host="partner.test", mode="transparent", headers=partner_hdr),),
               "clean", (None,), source=UNBOUND)
    yield Case(f"{g}:100-continue", "forged-identity", g,
               (req("POST", "partner.test", headers=[("Expect", "100-continue"), *one],
                    body=b"hello"),), "clean", ("billing",))
    yield Case(f"{g}:head-method", "forged-identity", g,
               (req("HEAD", "partner.test", headers=one),), "clean", ("billing",))
    yield Case(f"{g}:options-method", "forged-identity", g,
               (req("OPTIONS", "other.test", headers=one),), "clean")

    g = "trailers"
    for host, partner in (("partner.test", "billing"), ("other.test", None)):
        for tname in ("X-MSISDN", "X_Up_Calling_Line_Id", "X-Up-Calling-Line-Id", "x.imsi"):
            yield Case(f"{g}:{tname}@{host}", "forged-identity", g,
                       (req("POST", host, headers=[("Trailer", tname)], body=b"hello",
                            chunked=True, trailers=[(tname, FORGED)]),), "clean", (partner,))

    g = "keep-alive"
    for host, partner in (("partner.test", "billing"), ("other.test", None),
                          ("pseudo.test", "age")):
        for name in ("X-MSISDN", "X_Up_Calling_Line_Id", "X.IMSI"):
            first = req(host=host, path="/@M@/1", close=False)
            second = req(host=host, path="/@M@/2", headers=[(name, FORGED)])
            yield Case(f"{g}:second-request:{name}@{host}", "forged-identity", g,
                       (first, second), "clean", (partner, partner))
    g = "pipelined"
    for host, partner in (("partner.test", "billing"), ("other.test", None)):
        for name in ("X-MSISDN", "x_msisdn", "X-Up-Calling-Line-Id"):
            pair = req("POST", host, path="/@M@/1", body=b"abcde", close=False) + \
                req(host=host, path="/@M@/2", headers=[(name, FORGED)])
            yield Case(f"{g}:second-of-pair:{name}@{host}", "forged-identity", g,
                       (pair,), "clean", (partner, partner))
    mixed = req(host="other.test", path="/@M@/1", headers=one, close=False) + \
        req(host="partner.test", path="/@M@/2", headers=partner_hdr, close=False) + \
        req(host="pseudo.test", path="/@M@/3", headers=[("X.MSISDN", FORGED)])
    yield Case("pipelined:three-hosts", "forged-identity", "pipelined", (mixed,), "clean",
               (None, "billing", "age"))

    g = "obs-fold"
    for host in ("partner.test", "other.test"):
        yield Case(f"{g}:folded-name@{host}", "forged-identity", g,
                   (f"GET http://{host}/@M@ HTTP/1.1\r\nHost: {host}\r\nX-Innocent: a\r\n"
                    f" X-MSISDN: {FORGED}\r\n\r\n".encode(),), "reject")
        yield Case(f"{g}:folded-value@{host}", "forged-identity", g,
                   (f"GET http://{host}/@M@ HTTP/1.1\r\nHost: {host}\r\nX-MSISDN:\r\n"
                    f"\t{FORGED}\r\n\r\n".encode(),), "reject")
        yield Case(f"{g}:folded-partner-header@{host}", "forged-identity", g,
                   (f"GET http://{host}/@M@ HTTP/1.1\r\nHost: {host}\r\nX-Up-Calling-Line-Id:"
                    f" 1\r\n {FORGED}\r\n\r\n".encode(),), "reject")

    g = "value-bytes"
    for label, value, outcome in (
            ("nul", f"{FORGED}\x00", "reject"), ("cr", f"{FORGED}\rX-A: b", "reject"),
            ("lf", f"{FORGED}\nX-MSISDN: {FORGED}", "reject"),
            ("non-ascii", f"{FORGED}é", "clean"), ("latin1-high", f"\xff{FORGED}", "clean"),
            ("plus", f"+{FORGED}", "clean"), ("spaces", f"  {FORGED}  ", "clean"),
            ("tab", f"\t{FORGED}", "clean"), ("long", FORGED * 500, "clean"),
            ("utf8-digits", FULLWIDTH_DIGITS + FORGED, "clean")):
        for name in ("X-MSISDN", "X-Up-Calling-Line-Id"):
            raw = (f"GET http://partner.test/@M@ HTTP/1.1\r\nHost: partner.test\r\n{name}: "
                   f"{value}\r\nConnection: close\r\n\r\n")
            encoded = raw.encode("latin-1") if label == "latin1-high" else raw.encode()
            yield Case(f"{g}:{label}:{name}", "forged-identity", g, (encoded,),
                       outcome, ("billing",) if outcome == "clean" else (None,))

    g = "http-1.0"
    for host, partner in (("partner.test", "billing"), ("other.test", None)):
        yield Case(f"{g}:absolute@{host}", "forged-identity", g,
                   (req(host=host, version="1.0", close=False, headers=one + partner_hdr),),
                   "clean", (partner,))
        yield Case(f"{g}:with-host@{host}", "forged-identity", g,
                   (req(host=host, version="1.0", close=False, host_header=host,
                        headers=[("X_MSISDN", FORGED)]),), "clean", (partner,))
        yield Case(f"{g}:transparent@{host}", "forged-identity", g,
                   (req(host=host, version="1.0", mode="transparent", close=False,
                        headers=[("X.Up.Calling.Line.Id", FORGED)]),), "clean", (partner,))
        ka = req(host=host, version="1.0", path="/@M@/1", close=False,
                 headers=[("Connection", "keep-alive")])
        second = req(host=host, version="1.0", path="/@M@/2", close=False, headers=one)
        yield Case(f"{g}:keep-alive-second@{host}", "forged-identity", g, (ka + second,),
                   "clean", (partner,),
                   note="no keep-alive with HTTP/1.0 peers: closed after the first")

    g = "upgrade"
    ws = req(host="other.test", close=False, path="/@M@/1",
             headers=[("Connection", "Upgrade"), ("Upgrade", "websocket"),
                      ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                      ("Sec-WebSocket-Version", "13")])
    after = req(host="partner.test", path="/@M@-" + SMUGGLED, headers=one)
    yield Case(f"{g}:websocket-refused-then-forged", "forged-identity", g, (ws + after,),
               "clean", (None,), note="origin answers 200, not 101: nothing may follow")
    h2c = req(host="other.test", close=False, path="/@M@/1",
              headers=[("Connection", "Upgrade, HTTP2-Settings"), ("Upgrade", "h2c"),
                       ("HTTP2-Settings", "AAMAAABkAAQCAAAAAAIAAAAA")])
    yield Case(f"{g}:h2c-then-forged", "forged-identity", g, (h2c + after,), "clean", (None,),
               note="h2c is never tunnelled: a tunnel would carry later requests unstripped")


# ---------------------------------------------------------------- framing attacks

_SM = f"GET http://partner.test/@M@-{SMUGGLED} HTTP/1.1\r\nHost: partner.test\r\n" \
      f"X-MSISDN: {FORGED}\r\n\r\n".encode()


def _post(host: str = "partner.test", version: str = "1.1") -> bytes:
    return f"POST http://{host}/@M@ HTTP/{version}\r\nHost: {host}\r\n".encode()


def framing() -> Iterator[Case]:
    p = _post()
    reject: dict[str, tuple[str, bytes]] = {
        # CL.TE / TE.CL: both framings present
        "cl.te": ("cl-te", p + b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
                  b"0\r\n\r\n" + _SM),
        "te.cl": ("cl-te", p + b"Transfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n"
                  b"0\r\n\r\n" + _SM),
        "cl.te-zero-cl": ("cl-te", p + b"Content-Length: 0\r\nTransfer-Encoding: chunked\r\n"
                          b"\r\n5\r\nhello\r\n0\r\n\r\n" + _SM),
        "te.cl-http-1.0": ("cl-te", _post(version="1.0") + b"Transfer-Encoding: chunked\r\n"
                           b"Content-Length: 5\r\n\r\nhello" + _SM),
        # TE.TE obfuscations
        "te-xchunked": ("te-te", p + b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n" + _SM),
        "te-chunked-x": ("te-te", p + b"Transfer-Encoding: chunkedx\r\n\r\n0\r\n\r\n" + _SM),
        "te-twice": ("te-te", p + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked"
                     b"\r\n\r\n0\r\n\r\n" + _SM),
        "te-chunked-identity": ("te-te", p + b"Transfer-Encoding: chunked\r\n"
                                b"Transfer-Encoding: identity\r\n\r\n0\r\n\r\n" + _SM),
        "te-list-chunked-identity": ("te-te", p + b"Transfer-Encoding: chunked, identity\r\n"
                                     b"\r\n0\r\n\r\n" + _SM),
        "te-gzip-chunked": ("te-te", p + b"Transfer-Encoding: gzip, chunked\r\n\r\n"
                            b"0\r\n\r\n" + _SM),
        "te-quoted": ("te-te", p + b'Transfer-Encoding: "chunked"\r\n\r\n0\r\n\r\n' + _SM),
        "te-space-before-colon": ("te-te", p + b"Transfer-Encoding : chunked\r\n"
                                  b"Content-Length: 5\r\n\r\nhello" + _SM),
        "te-tab-before-colon": ("te-te", p + b"Transfer-Encoding\t: chunked\r\n\r\n"
                                b"0\r\n\r\n" + _SM),
        "te-vertical-tab": ("te-te", p + b"Transfer-Encoding:\x0bchunked\r\n\r\n"
                            b"0\r\n\r\n" + _SM),
        "te-folded": ("te-te", p + b"Transfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n" + _SM),
        "te-obs-fold-line": ("te-te", p + b"X-A: b\r\n Transfer-Encoding: chunked\r\n\r\n"
                             b"0\r\n\r\n" + _SM),
        "te-nul": ("te-te", p + b"Transfer-Encoding: chunked\x00\r\n\r\n0\r\n\r\n" + _SM),
        "te-http-1.0": ("te-te", _post(version="1.0") + b"Transfer-Encoding: chunked\r\n\r\n"
                        b"0\r\n\r\n" + _SM),
        # Content-Length
        "cl-duplicate": ("content-length", p + b"Content-Length: 5\r\nContent-Length: 40\r\n"
                         b"\r\nhello" + _SM),
        "cl-duplicate-same": ("content-length", p + b"Content-Length: 5\r\n"
                              b"Content-Length: 5\r\n\r\nhello" + _SM),
        "cl-list": ("content-length", p + b"Content-Length: 5, 40\r\n\r\nhello" + _SM),
        "cl-list-same": ("content-length", p + b"Content-Length: 5, 5\r\n\r\nhello" + _SM),
        "cl-plus": ("content-length", p + b"Content-Length: +5\r\n\r\nhello" + _SM),
        "cl-negative": ("content-length", p + b"Content-Length: -1\r\n\r\n" + _SM),
        "cl-hex": ("content-length", p + b"Content-Length: 0x5\r\n\r\nhello" + _SM),
        "cl-inner-space": ("content-length", p + b"Content-Length: 5 5\r\n\r\nhello" + _SM),
        "cl-exponent": ("content-length", p + b"Content-Length: 5e0\r\n\r\nhello" + _SM),
        "cl-overflow": ("content-length", p + b"Content-Length: 99999999999999999999999\r\n"
                        b"\r\nhello" + _SM),
        "cl-empty": ("content-length", p + b"Content-Length: \r\n\r\nhello" + _SM),
        "cl-fullwidth-digit": ("content-length", p + "Content-Length: \uff15\r\n\r\nhello"
                               .encode() + _SM),
        "cl-space-before-colon": ("content-length", p + b"Content-Length : 5\r\n\r\nhello"
                                  + _SM),
        "cl-underscore-and-cl": ("content-length", p + b"Content_Length: 40\r\n"
                                 b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello" + _SM),
        # chunk sizes and extensions
        "chunk-size-not-hex": ("chunk", p + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n"
                               b"hello\r\n0\r\n\r\n" + _SM),
        "chunk-size-overflow": ("chunk", p + b"Transfer-Encoding: chunked\r\n\r\n"
                                b"10000000000000005\r\nhello\r\n0\r\n\r\n" + _SM),
        "chunk-size-negative": ("chunk", p + b"Transfer-Encoding: chunked\r\n\r\n-5\r\n"
                                b"hello\r\n0\r\n\r\n" + _SM),
        "chunk-size-0x": ("chunk", p + b"Transfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n"
                          b"0\r\n\r\n" + _SM),
        "chunk-size-trailing-space": ("chunk", p + b"Transfer-Encoding: chunked\r\n\r\n"
                                      b"5 \r\nhello\r\n0\r\n\r\n" + _SM),
        "chunk-size-leading-space": ("chunk", p + b"Transfer-Encoding: chunked\r\n\r\n"
                                     b" 5\r\nhello\r\n0\r\n\r\n" + _SM),
        "chunk-size-empty": ("chunk", p + b"Transfer-Encoding: chunked\r\n\r\n\r\nhello\r\n"
                             b"0\r\n\r\n" + _SM),
        "chunk-data-too-long": ("chunk", p + b"Transfer-Encoding: chunked\r\n\r\n3\r\n"
                                b"hello\r\n0\r\n\r\n" + _SM),
        "chunk-missing-crlf": ("chunk", p + b"Transfer-Encoding: chunked\r\n\r\n5\r\n"
                               b"hello0\r\n\r\n" + _SM),
        "chunk-bare-lf": ("chunk", p + b"Transfer-Encoding: chunked\r\n\r\n5\nhello\n0\n\n"
                          + _SM),
        "chunk-ext-bare-lf": ("chunk", p + b"Transfer-Encoding: chunked\r\n\r\n5;a=b\nhello"
                              b"\r\n0\r\n\r\n" + _SM),
        "chunk-ext-bare-cr": ("chunk", p + b"Transfer-Encoding: chunked\r\n\r\n5;a\rb\r\n"
                              b"hello\r\n0\r\n\r\n" + _SM),
        "chunk-ext-quoted-crlf": ("chunk", p + b'Transfer-Encoding: chunked\r\n\r\n5;a="\r\n'
                                  b'"\r\nhello\r\n0\r\n\r\n' + _SM),
        "chunk-nul": ("chunk", p + b"Transfer-Encoding: chunked\r\n\r\n5\x00\r\nhello\r\n"
                      b"0\r\n\r\n" + _SM),
        # bare LF, bare CR, malformed lines
        "bare-lf-head": ("line", b"GET http://partner.test/@M@ HTTP/1.1\nHost: partner.test"
                         b"\n\n"),
        "bare-lf-one-header": ("line", b"GET http://partner.test/@M@ HTTP/1.1\r\nHost: "
                               b"partner.test\nX-MSISDN: " + FORGED_B + b"\r\n\r\n"),
        "bare-cr-header": ("line", b"GET http://partner.test/@M@ HTTP/1.1\r\nHost: "
                           b"partner.test\rX-MSISDN: " + FORGED_B + b"\r\n\r\n"),
        "bare-lf-request-line": ("line", b"GET http://partner.test/@M@ HTTP/1.1\nHost: "
                                 b"partner.test\r\n\r\n"),
        "space-before-colon": ("line", p + b"X-MSISDN : " + FORGED_B + b"\r\n\r\n"),
        "empty-header-name": ("line", p + b": " + FORGED_B + b"\r\n\r\n"),
        "space-in-header-name": ("line", p + b"X MSISDN: " + FORGED_B + b"\r\n\r\n"),
        "no-colon": ("line", p + b"X-MSISDN " + FORGED_B + b"\r\n\r\n"),
        "nul-in-name": ("line", p + b"X-MS\x00ISDN: " + FORGED_B + b"\r\n\r\n"),
        "high-bit-in-name": ("line", p + "X-MSİSDN: ".encode() + FORGED_B + b"\r\n\r\n"),
        "lower-case-method": ("line", b"get http://partner.test/@M@ HTTP/1.1\r\n"
                              b"Host: partner.test\r\n\r\n"),
        "http-0.9": ("line", b"GET /@M@\r\n\r\n"),
        "http-2.0": ("line", b"GET http://partner.test/@M@ HTTP/2.0\r\nHost: partner.test"
                     b"\r\n\r\n"),
        "http-1.2": ("line", b"GET http://partner.test/@M@ HTTP/1.2\r\nHost: partner.test"
                     b"\r\n\r\n"),
        "lower-case-version": ("line", b"GET http://partner.test/@M@ http/1.1\r\n"
                               b"Host: partner.test\r\n\r\n"),
        "tls-client-hello": ("line", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03@M@"),
        "prior-knowledge-h2": ("line", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n@M@"),
        # Host header
        "two-hosts": ("host", b"GET /@M@ HTTP/1.1\r\nHost: partner.test\r\nHost: other.test"
                      b"\r\n\r\n"),
        "two-hosts-absolute": ("host", b"GET http://partner.test/@M@ HTTP/1.1\r\nHost: a\r\n"
                               b"Host: b\r\n\r\n"),
        "no-host-1.1": ("host", b"GET /@M@ HTTP/1.1\r\n\r\n"),
        "empty-host-transparent": ("host", b"GET /@M@ HTTP/1.1\r\nHost: \r\n\r\n"),
        "host-with-path": ("host", b"GET /@M@ HTTP/1.1\r\nHost: evil.test/partner.test\r\n\r\n"),
        "host-with-userinfo": ("host", b"GET /@M@ HTTP/1.1\r\nHost: partner.test@evil.test"
                               b"\r\n\r\n"),
        "host-double-port": ("host", b"GET /@M@ HTTP/1.1\r\nHost: partner.test:80:80\r\n\r\n"),
        "host-space": ("host", b"GET /@M@ HTTP/1.1\r\nHost: partner.test evil.test\r\n\r\n"),
        # absolute URI
        "uri-userinfo": ("uri", b"GET http://user:pw@partner.test/@M@ HTTP/1.1\r\nHost: "
                         b"partner.test\r\n\r\n"),
        "uri-userinfo-evil": ("uri", b"GET http://partner.test@evil.test/@M@ HTTP/1.1\r\n"
                              b"Host: partner.test\r\n\r\n"),
        "uri-backslash": ("uri", b"GET http://evil.test\\@partner.test/@M@ HTTP/1.1\r\n"
                          b"Host: x\r\n\r\n"),
        "uri-https": ("uri", b"GET https://partner.test/@M@ HTTP/1.1\r\nHost: partner.test"
                      b"\r\n\r\n"),
        "uri-ftp": ("uri", b"GET ftp://partner.test/@M@ HTTP/1.1\r\nHost: partner.test\r\n\r\n"),
        "uri-pct-host": ("uri", b"GET http://partner%2etest/@M@ HTTP/1.1\r\nHost: x\r\n\r\n"),
        "uri-space": ("uri", b"GET http://partner.test/@M@ x HTTP/1.1\r\nHost: x\r\n\r\n"),
        "absolute-uri-no-host-1.1": ("uri", b"GET http://other.test/@M@ HTTP/1.1\r\n\r\n"),
        "connect-port-80": ("uri", b"CONNECT partner.test:80 HTTP/1.1\r\nHost: partner.test"
                            b":80\r\n\r\n@M@"),
        "connect-no-port": ("uri", b"CONNECT partner.test HTTP/1.1\r\nHost: partner.test\r\n"
                            b"\r\n@M@"),
    }
    for name, (group, data) in reject.items():
        yield Case(name, "framing", group, (data,), "reject")

    # Oversized heads and counts: 431/414, built here to keep the table readable.
    big = "".join(f"X-Fill-{i}: {'a' * 1000}\r\n" for i in range(70))
    yield Case("head-over-64k", "framing", "size", (
        f"GET http://partner.test/@M@ HTTP/1.1\r\nHost: partner.test\r\n{big}X-MSISDN: "
        f"{FORGED}\r\n\r\n".encode(),), "reject")
    yield Case("one-70k-header", "framing", "size", (
        f"GET http://partner.test/@M@ HTTP/1.1\r\nHost: partner.test\r\nX-Big: {'b' * 70000}"
        f"\r\n\r\n".encode(),), "reject")
    many = "".join(f"X-F{i}: v\r\n" for i in range(101))
    yield Case("101-headers", "framing", "size", (
        f"GET http://partner.test/@M@ HTTP/1.1\r\nHost: partner.test\r\n{many}\r\n".encode(),),
        "reject")
    ids = "".join(f"X-MSISDN-{i}-msisdn: {FORGED}\r\n" for i in range(150))
    yield Case("150-identity-headers", "framing", "size", (
        f"GET http://partner.test/@M@ HTTP/1.1\r\nHost: partner.test\r\n{ids}\r\n".encode(),),
        "reject")
    yield Case("uri-70k", "framing", "size", (
        f"GET http://partner.test/@M@/{'u' * 70000} HTTP/1.1\r\nHost: partner.test\r\n\r\n"
        .encode(),), "reject")
    yield Case("method-70k", "framing", "size", (
        f"{'G' * 70000} http://partner.test/@M@ HTTP/1.1\r\nHost: partner.test\r\n\r\n"
        .encode(),), "reject")

    # Normalised rather than refused: the origin must see exactly one well-framed request.
    clean: dict[str, tuple[str, bytes, PartnerId]] = {
        "cl-leading-zeros": ("content-length", p + b"Content-Length: 005\r\nConnection: "
                             b"close\r\n\r\nhello", "billing"),
        "cl-ows": ("content-length", p + b"Content-Length:   5  \r\nConnection: close\r\n\r\n"
                   b"hello", "billing"),
        "te-upper-case": ("te-te", p + b"Transfer-Encoding: CHUNKED\r\nConnection: close\r\n"
                          b"\r\n5\r\nhello\r\n0\r\n\r\n", "billing"),
        "chunk-ext-token": ("chunk", p + b"Transfer-Encoding: chunked\r\nConnection: close"
                            b"\r\n\r\n5;name=value\r\nhello\r\n0;x=y\r\n\r\n", "billing"),
        "chunk-upper-hex": ("chunk", p + b"Transfer-Encoding: chunked\r\nConnection: close"
                            b"\r\n\r\nA\r\nhellohello\r\n0\r\n\r\n", "billing"),
        "chunk-leading-zeros": ("chunk", p + b"Transfer-Encoding: chunked\r\nConnection: "
                                b"close\r\n\r\n0005\r\nhello\r\n0\r\n\r\n", "billing"),
        "cl-body-contains-request": ("content-length", p + b"Content-Length: %d\r\n"
                                     b"Connection: close\r\n\r\n" % len(_SM) + _SM, "billing"),
        "te-underscore-alias-with-cl": ("te-te", p + b"Transfer_Encoding: chunked\r\n"
                                        b"Content-Length: 5\r\nConnection: close\r\n\r\nhello",
                                        "billing"),
        "absolute-uri-wins-over-host": ("uri", b"GET http://other.test/@M@ HTTP/1.1\r\n"
                                        b"Host: partner.test\r\nConnection: close\r\n\r\n", None),
        "absolute-partner-host-evil": ("uri", b"GET http://partner.test/@M@ HTTP/1.1\r\n"
                                       b"Host: evil.test\r\nConnection: close\r\n\r\n",
                                       "billing"),
        "proxy-connection-nominates": ("line", b"GET http://other.test/@M@ HTTP/1.1\r\n"
                                       b"Host: other.test\r\nProxy-Connection: X-Hide\r\n"
                                       b"X-Hide: " + FORGED_B + b"\r\nConnection: close\r\n\r\n",
                                       None),
    }
    for name, (group, data, partner) in clean.items():
        yield Case(name, "framing", group, (data,), "clean", (partner,))

    # A good request, then an attack on the same connection: the first goes through alone.
    good = b"GET http://other.test/@M@/1 HTTP/1.1\r\nHost: other.test\r\n\r\n"
    yield Case("good-then-cl.te", "framing", "after-good", (
        good + p.replace(b"/@M@", b"/@M@-" + SMUGGLED.encode()) +
        b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + _SM,),
        "reject", note="the first request is answered 200, then 400 and close")
    yield Case("good-then-bad-chunk", "framing", "after-good", (
        good + p.replace(b"/@M@", b"/@M@-" + SMUGGLED.encode()) +
        b"Transfer-Encoding: chunked\r\n\r\nzz\r\n" + _SM,), "reject")


# ---------------------------------------------------------------- host matching traps

def host_match() -> Iterator[Case]:
    g = "look-alike"
    for host in ("partner.test.evil.test", "evil.test", "partnertest.test",
                 "xn--prtner-2ua.test", "partner.tests", "evil.partner.test",
                 "apseudo.test", "pseudo.test.evil.test"):
        for mode in ("forward", "transparent"):
            yield Case(f"{g}:{host}/{mode}", "host-match", g,
                       (req(host=host, mode=mode),), "clean", (None,))
    g = "spoofed-structure"
    for target, host_header in (
            ("http://evil.test/partner.test/@M@", "evil.test"),
            ("http://evil.test/@M@?partner.test", "evil.test"),
            ("http://evil.test/@M@#@partner.test", "evil.test"),
            ("http://evil.test:80/@M@", "partner.test")):
        yield Case(f"{g}:{target}", "host-match", g, (
            f"GET {target} HTTP/1.1\r\nHost: {host_header}\r\nConnection: close\r\n\r\n"
            .encode(),), "clean", (None,))
    for bad in ("partner.test@evil.test", "evil.test\\partner.test", "evil.test%2Fpartner.test",
                "p\u0430rtner.test", "partner.test\x00.evil.test", "partner..test",
                "-partner.test", "partner.test:abc", "[::1"):
        for mode in ("forward", "transparent"):
            yield Case(f"malformed:{bad!r}/{mode}", "host-match", "malformed",
                       (req(host=bad, mode=mode),), "reject")
    g = "spelling"
    for host, mode in (("PARTNER.TEST", "forward"), ("Partner.Test", "transparent"),
                       ("partner.test.", "forward"), ("PARTNER.TEST.", "transparent"),
                       ("partner.test:80", "forward"), ("partner.test:80", "transparent")):
        yield Case(f"{g}:{host}/{mode}", "host-match", g,
                   (req(host=host, mode=mode),), "clean", ("billing",),
                   note="the same partner, normalised: the real number once, never forged")
    for host in ("A.PSEUDO.TEST", "b.a.pseudo.test"):
        yield Case(f"{g}:wildcard:{host}", "host-match", g, (req(host=host),), "clean",
                   ("age",))
    g = "ip-literal"
    for literal in ("127.0.0.1", "2130706433", "0x7f.0.0.1", "0177.0.0.1", "127.1",
                    "[::ffff:127.0.0.1]", "[::1]"):
        for mode in ("forward", "transparent"):
            yield Case(f"{g}:{literal}/{mode}", "host-match", g,
                       (req(host=f"{literal}:@P@", mode=mode,
                            headers=[("X-MSISDN", FORGED)]),), "safe", (None,),
                       note="an address literal is never a partner")
    g = "path-scope"
    for path, partner in (("/billing/@M@", "paths"), ("/billingx/@M@", None),
                          ("/billing/../@M@", None), ("/billing/%2e%2e/@M@", None),
                          ("//billing/@M@", None), ("/billing%2F@M@", None),
                          ("/BILLING/@M@", None), ("/@M@/billing", None),
                          ("/billing\\..\\@M@", None)):
        yield Case(f"{g}:{path}", "host-match", g, (req(host="paths.test", path=path),),
                   "either" if "\\" in path else "clean", (partner,))
    yield Case(f"{g}:port-8080-outside-ports", "host-match", g,
               (req(host="paths.test:8080", path="/billing/@M@"),), "clean", (None,))
    g = "connect"
    yield Case(f"{g}:connect-port-not-allowed", "host-match", g, (
        b"CONNECT partner.test:8443 HTTP/1.1\r\nHost: partner.test:8443\r\n\r\n@M@",),
        "reject")


# ---------------------------------------------------------------- destinations (issue 15)

# Every spelling a resolver turns into this host (PRODUCT.md invariant 6): refused with 403
# before any connect, whatever the mode. @P@ is the echo origin's port, so a request that
# got through would be found there; CONNECT uses 443, a port the hostile gateway allows.
INTERNAL_SPELLINGS = ("127.0.0.1", "2130706433", "0x7f000001", "0177.0.0.1", "127.1",
                      "127.0.0.1.", "localhost", "localhost.", "[::1]", "[::ffff:127.0.0.1]",
                      "[::ffff:7f00:1]", "0", "0.0.0.0", "127.255.255.254", "[::127.0.0.1]")
METADATA = ("169.254.169.254", "[fe80::1]", "[::ffff:169.254.169.254]",
            "[64:ff9b::a9fe:a9fe]", "[2002:a9fe:a9fe::]", "224.0.0.1", "255.255.255.255")
WEBSOCKET = [("Upgrade", "websocket"), ("Connection", "Upgrade"),
             ("Sec-WebSocket-Version", "13"), ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")]


def destinations() -> Iterator[Case]:
    g = "internal"
    for host in INTERNAL_SPELLINGS:
        for mode in ("forward", "transparent"):
            yield Case(f"{g}:{host}/{mode}", "destination", g,
                       (req(host=f"{host}:@P@", mode=mode),), "reject")
        yield Case(f"{g}:{host}/websocket", "destination", g,
                   (req(host=f"{host}:@P@", path="/ws/@M@", headers=WEBSOCKET, close=False),),
                   "reject")
        yield Case(f"{g}:{host}/connect", "destination", g, (
            f"CONNECT {host}:443 HTTP/1.1\r\nHost: {host}:443\r\n\r\n@M@".encode(),),
            "reject")
    g = "metadata"
    for host in METADATA:
        yield Case(f"{g}:{host}/forward", "destination", g, (req(host=host),), "reject")
        yield Case(f"{g}:{host}/connect", "destination", g, (
            f"CONNECT {host}:443 HTTP/1.1\r\nHost: {host}:443\r\n\r\n@M@".encode(),),
            "reject")


def all_cases() -> list[Case]:
    cases = [*forged_identity(), *framing(), *host_match(), *destinations()]
    names = [c.name for c in cases]
    assert len(names) == len(set(names)), "case names must be unique"
    return cases
