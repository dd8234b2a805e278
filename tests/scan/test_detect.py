"""Detection: examples, the labeled corpus (recall/precision), and generated inputs."""

from __future__ import annotations

import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from linewarden.identifiers import luhn_valid
from linewarden.names import IdentityNames
from linewarden.scan.detect import Detector, is_imei, is_imsi

from .corpus import Label

DET = Detector(("GB",))


def found(text: bytes, det: Detector = DET) -> list[tuple[str, str, bytes, str | None]]:
    return [(f.kind, f.value, text[f.start:f.end], f.header) for f in det.scan(text)]


@pytest.mark.parametrize(
    ("text", "written"),
    [
        (b"call +447400900123 now", b"+447400900123"),
        (b"call +44 7400 900123 now", b"+44 7400 900123"),
        (b"call 0044 7400 900123 now", b"0044 7400 900123"),
        (b"call 07400 900123 now", b"07400 900123"),
        (b"call 07400900123.", b"07400900123"),
        (b"GET /?n=447400900123&x=1", b"447400900123"),
        (b"GET /?n=%2B447400900123&x=1", b"%2B447400900123"),
        (b"tel:+44 (0)7400 900123", b"+44 (0)7400 900123"),
        (b"to 07400 900123 200 5120", b"07400 900123"),
        (b"jersey +44 7797 123456", b"+44 7797 123456"),
        (b"man 447624123456", b"447624123456"),
        (b"[+33 6 12 34 56 78]", b"+33 6 12 34 56 78"),
        (b"GET /?q=call+447400900123", b"447400900123"),  # '+' is a space in a query
    ],
)
def test_numbers_in_accepted_forms(text: bytes, written: bytes) -> None:
    hits = found(text)
    assert [h[2] for h in hits] == [written]
    assert hits[0][0] == "msisdn"


def test_crown_dependency_mobiles_count_as_uk_range() -> None:
    for e164 in ("+447797123456", "+447781123456", "+447624123456"):
        assert phonenumbers.region_code_for_number(phonenumbers.parse(e164)) != "GB"
        assert found(e164[1:].encode())[0][1] == e164


@pytest.mark.parametrize(
    "text",
    [
        b'192.168.100.200 - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.1" 200 2326',
        b"2024-01-15T10:00:00.123Z took 1234567ms epoch=1700000000 ms=1700000000123",
        b"upstream 10.0.0.1:8080 bytes=74009001234 order=7400900123",
        b"rid=550e8400-e29b-41d4-a716-446655440000 sess=a447400900123f",
        b"card 4111 1111 1111 1111 and 4444333322221111 and 4472 9558 9576 3486",
        b"amex 378282246310005 version 1.447400900.123",
        b"x447400900123 447400900123x id-447400900123",
        b'{"http_x_msisdn":"-","msisdn":null}',
    ],
)
def test_look_alikes_are_not_reported(text: bytes) -> None:
    assert found(text) == []


def test_identity_headers_by_name_in_each_log_style() -> None:
    text = (
        b"X-Up-Calling-Line-ID: 447400900123\r\n"
        b"X_MSISDN: 447400900124\r\n"
        b'{"http_x_uidh":"MTIzNDU2Nzg5MA==","http_x_orange_id":"tok-1"}\n'
        b"msisdn=33612345678&x=1\n"
        b"X-IMSI: 234150123456789\r\n"
        b"x-nokia-alias: abcdefgh\r\n"
        b"x-subscriber-id: 999\r\n"
    )
    hits = found(text)
    assert [(k, h) for k, _, _, h in hits] == [
        ("msisdn", "x-up-calling-line-id"),
        ("msisdn", "x-msisdn"),
        ("identity", "x-uidh"),
        ("identity", "x-orange-id"),
        ("msisdn", "msisdn"),
        ("imsi", "x-imsi"),
        ("identity", "x-nokia-alias"),
        ("identity", "x-subscriber-id"),
    ]
    # Under an identity header a bare number is E.164 without the plus, whatever country.
    assert hits[4][1] == "+33612345678"


def test_operator_added_names_and_suffixes() -> None:
    det = Detector(("GB",), IdentityNames(["x-my-sub"], ["custtag"]))
    hits = found(b"X-My-Sub: abcdef\nX-Foo-CustTag: zzz123\nX-Other: 1\n", det)
    assert [h[3] for h in hits] == ["x-my-sub", "x-foo-custtag"]


def test_imsi_and_imei() -> None:
    assert luhn_valid("79927398713")
    assert is_imei("352099001761481")
    assert not is_imei("352099001761482")
    assert is_imsi("234150123456789") and not is_imsi("111150123456789")
    hits = found(b"dev 35-209900-176148-1 sim 234150123456789")
    assert [(k, v) for k, v, _, _ in hits] == [
        ("imei", "352099001761481"), ("imsi", "234150123456789")
    ]


def test_regions_enable_national_forms() -> None:
    fr = Detector(("FR",))
    assert found(b"appel 06 12 34 56 78 fin", fr)[0][1] == "+33612345678"
    assert found(b"appel 06 12 34 56 78 fin") == []  # not a GB number
    with pytest.raises(ValueError, match="unknown region"):
        Detector(("XX",))


def test_line_numbers_are_per_chunk() -> None:
    text = b"a\nb\n+447400900123\nc\n07400 900124 x\n"
    assert [f.line for f in DET.scan(text)] == [2, 4]


def test_corpus_recall_and_precision(corpus: tuple[bytes, list[Label]]) -> None:
    text, labels = corpus
    numbers = [lb for lb in labels if lb.kind == "msisdn"]
    assert len(numbers) >= 1000
    findings = {(f.start, f.end): f for f in Detector(("GB",)).scan(text)}
    missed = [lb for lb in labels if (f := findings.get((lb.start, lb.end))) is None
              or (f.kind, f.value) != (lb.kind, lb.value)]
    assert missed == []  # recall 100%
    expected = {(lb.start, lb.end) for lb in labels}
    false_positives = [f for span, f in findings.items() if span not in expected]
    assert len(false_positives) <= 0.01 * len(findings)  # precision >= 99%


UK_MOBILE = st.integers(min_value=0, max_value=999_999).map(lambda n: f"+447400{n:06d}")


def _forms(e164: str) -> list[str]:
    nsn = e164[3:]
    return [e164, "+44 " + nsn[:4] + " " + nsn[4:], "0" + nsn, "0" + nsn[:4] + " " + nsn[4:],
            "00" + e164[1:], e164[1:], "+44-" + nsn[:4] + "-" + nsn[4:]]


NOISE = st.sampled_from([
    "GET /index.html", "200 2326", "10.1.2.3", "[10/Oct/2000:13:55:36 -0700]", "-", '"-"',
    "took 1234ms", "order=123456789", "2024-01-15", "v1.2.3", "ok", "size=5120",
])


@settings(max_examples=200, deadline=None)
@given(UK_MOBILE, st.integers(0, 6), NOISE, NOISE, st.sampled_from([" ", "=", ":", '"', "/"]))
def test_any_uk_mobile_in_any_form_is_found(
    e164: str, form: int, before: str, after: str, sep: str
) -> None:
    written = _forms(e164)[form]
    close = sep if sep == '"' else " "
    text = f"{before} x{sep}{written}{close} {after}\n".encode()
    hits = found(text)
    assert [(k, v, w) for k, v, w, _ in hits] == [("msisdn", e164, written.encode())]


@settings(max_examples=200, deadline=None)
@given(st.lists(NOISE, min_size=1, max_size=8), st.integers(1, 254), st.integers(1, 254))
def test_noise_alone_is_never_reported(parts: list[str], a: int, b: int) -> None:
    text = (" ".join(parts) + f" {a}.{b}.{a}.{b}:{a * 100}\n").encode()
    assert found(text) == []
