"""The fast paths against plain references written differently, over generated logs.

`Detector.candidate_runs` (only runs around a marker) must find exactly what scanning every
run finds, and the reversed header regex exactly what the forward one finds. The references
here are the straightforward versions: every run of 8+ digits and number punctuation, and
one forward regex alternating every tail.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from linewarden.scan.detect import _NAME_CHARS, Detector, _loose, _trim_run

from .corpus import Label

DETECTORS = [Detector(("GB",)), Detector(("GB", "FR", "US", "DE", "IN"))]
_EVERY_RUN = re.compile(rb"[0-9 ()+\-]{8,}")


def every_run(chunk: bytes) -> list[tuple[int, int]]:
    spans = (_trim_run(chunk, *m.span()) for m in _EVERY_RUN.finditer(chunk))
    return [s for s in spans if s is not None]


def forward_headers(det: Detector, lowered: bytes) -> list[tuple[int, int, int]]:
    tails = sorted(det.header_tails(), key=len, reverse=True)
    pattern = re.compile(
        b"(" + b"|".join(_loose(t) for t in tails) + rb")[\"']?[ \t]*[:=][ \t]*"
    )
    out = []
    for m in pattern.finditer(lowered):
        start = m.start(1)
        while start > 0 and lowered[start - 1] in _NAME_CHARS:
            start -= 1
        out.append((start, m.end(1), m.end()))
    return out


def assert_same(det: Detector, text: bytes) -> None:
    assert det._number_spans(text, []) == det._number_spans(text, [], every_run(text))
    lowered = text.lower()
    assert det.header_matches(lowered) == forward_headers(det, lowered)


@pytest.mark.parametrize("det", DETECTORS, ids=["GB", "GB+FR+US+DE+IN"])
def test_same_as_every_run_on_the_corpus(
    det: Detector, corpus: tuple[bytes, list[Label]]
) -> None:
    assert_same(det, corpus[0])


# Pieces that make numbers, near-numbers and header names in every accepted form.
PIECES = st.sampled_from([
    "0", "00", "44", "1", "33", "91", "7400", "900123", "12", "345", "6789", "4111", " ", "  ",
    "-", "(", ")", "+", "(0)", "%2B", "%2b", "x", "=", ":", '"', "'", ".", "/", "\n", "\t",
    "msisdn", "X-MSISDN", "x_up_calling_line_id", "imsi", "Imei", "uid-h", "acr", "x.orange.id",
    "sub_no", "http_", "$", "[MSISDN]", "35-209900-176148-1", "352099001761481",
    "234150123456789", "1234567890123456",
])


@settings(max_examples=600, deadline=None)
@given(st.lists(PIECES, max_size=40))
def test_same_as_every_run_on_generated_text(pieces: list[str]) -> None:
    text = "".join(pieces).encode()
    for det in DETECTORS:
        assert_same(det, text)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_same_as_every_run_on_any_bytes(text: bytes) -> None:
    for det in DETECTORS:
        assert_same(det, text)
