"""The detection table: >= 60 real-world samples, no false negatives, known false positives."""

from __future__ import annotations

import pytest
from checker_samples import HARMLESS_SAMPLES, IDENTITY_SAMPLES, Sample

from linewarden.checker import (
    JSON_SCHEMA_VERSION,
    MAX_SCANNED_REQUEST_CHARS,
    analyse,
    validate_regions,
)
from linewarden.names import IdentityNames


def test_the_table_is_big_enough() -> None:
    assert len(IDENTITY_SAMPLES) + len(HARMLESS_SAMPLES) >= 60
    assert len(IDENTITY_SAMPLES) >= 30 and len(HARMLESS_SAMPLES) >= 30
    kinds = {s.expected for s in IDENTITY_SAMPLES}
    assert kinds == {"phone_number", "imsi", "imei", "tracking_id", "internal_address",
                     "identity_header"}


@pytest.mark.parametrize("sample", IDENTITY_SAMPLES, ids=lambda s: s.id)
def test_identity_sample_is_flagged(sample: Sample) -> None:
    report = analyse([(sample.name, sample.value)])
    assert report.identity_revealed, f"false negative ({sample.source})"
    (finding,) = report.findings
    assert finding.kind == sample.expected
    assert finding.header == sample.name
    assert finding.message.startswith("This site ")


@pytest.mark.parametrize("sample", HARMLESS_SAMPLES, ids=lambda s: s.id)
def test_harmless_sample_is_not_flagged(sample: Sample) -> None:
    report = analyse([(sample.name, sample.value)])
    assert report.findings == (), f"false positive ({sample.source})"


# The false positives we accept, kept here so docs/checker.md and the code cannot drift apart.
# Each is a value that *could* be identity and that a checker cannot tell apart from it; the
# checker's job is to alarm on a leak, so it errs towards flagging.
ACCEPTED_FALSE_POSITIVES: tuple[tuple[str, str, str], ...] = (
    ("x-order-id", "33612345678", "phone_number"),  # digit run that is a valid E.164 number
    ("x-account", "12015550123", "phone_number"),  # NANP: any 1 + 10 digits of a valid area
    ("x-support-line", "0800 123 4567", "phone_number"),  # a number, just not the visitor's
    ("referer", "https://shop.example/p/4915123456789", "phone_number"),  # number in a URL
    ("x-card", "378282246310005", "imei"),  # 15 digits passing Luhn (an Amex test number)
    ("x-ref", "234567890123456", "imsi"),  # 15 digits starting with an MCC (234 = UK)
    ("x-aff-subid", "campaign42", "identity_header"),  # the loose suffix match on `subid`
)


@pytest.mark.parametrize(("name", "value", "kind"), ACCEPTED_FALSE_POSITIVES)
def test_accepted_false_positives_are_what_the_docs_say(name: str, value: str, kind: str) -> None:
    (finding,) = analyse([(name, value)]).findings
    assert finding.kind == kind


def test_a_whole_clean_request() -> None:
    report = analyse([(s.name, s.value) for s in HARMLESS_SAMPLES])
    assert not report.identity_revealed
    assert report.headline == "No identity revealed"
    assert report.verdict.startswith("No identity revealed")
    assert len(report.headers) == len(HARMLESS_SAMPLES)


def test_the_o2_leak_in_plain_words() -> None:
    report = analyse([("host", "checker.example"), ("x-up-calling-line-id", "447400900123")])
    (finding,) = report.findings
    assert finding.message == "This site can see your phone number +44 7400 900123"
    assert finding.value == "+44 7400 900123"
    assert finding.index == 1
    assert report.verdict == "Identity revealed: this site can see your phone number."


def test_duplicates_and_order_are_kept() -> None:
    headers = [("x-a", "1"), ("x-msisdn", "447400900123"), ("x-a", "2"),
               ("x-msisdn", "447400123456")]
    report = analyse(headers)
    assert [(h.name, h.value) for h in report.headers] == headers
    assert [f.index for f in report.findings] == [1, 3]
    assert report.revealed == ("phone_number",)


def test_verdict_names_every_kind_once() -> None:
    report = analyse([("x-imei", "356938035643809"), ("x-msisdn", "447400900123"),
                      ("x-imsi", "234150999999999"), ("x-msisdn", "447400123456")])
    assert report.revealed == ("imei", "phone_number", "imsi")
    assert report.verdict == (
        "Identity revealed: this site can see your phone's serial number (IMEI), "
        "phone number and SIM subscriber number (IMSI)."
    )


def test_region_hints_decide_national_numbers() -> None:
    german_national = [("x-contact", "0151 23456789")]
    assert not analyse(german_national, regions=["GB"]).identity_revealed
    (finding,) = analyse(german_national, regions=["GB", "DE"]).findings
    assert finding.value == "+49 1512 3456789"


def test_unknown_region_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown region UK"):
        validate_regions(["UK"])
    assert validate_regions([" gb", "de", "GB"]) == ("GB", "DE")


def test_operator_added_names_and_suffixes() -> None:
    names = IdentityNames(extra_names=["x-partner-token"], extra_suffixes=["custref"])
    headers = [("x-partner-token", "t0k3n"), ("X-Shop-CustRef", "c-42")]
    assert not analyse(headers).identity_revealed
    kinds = [f.kind for f in analyse(headers, names=names).findings]
    assert kinds == ["identity_header", "identity_header"]


def test_empty_identity_header_is_flagged_in_plain_words() -> None:
    (finding,) = analyse([("x-msisdn", "  ")]).findings
    assert finding.kind == "identity_header"
    assert finding.message == (
        "This site received x-msisdn, a header mobile networks use to pass on who you are "
        "(empty this time)"
    )


def test_huge_values_are_bounded() -> None:
    # 1 MiB of digits and separators: must finish quickly and still flag the early number.
    value = "447400900123 " + "1234 " * 200_000
    report = analyse([("x-junk", value)])
    assert [f.kind for f in report.findings] == ["phone_number"]


def test_search_budget_per_request() -> None:
    # A hostile 100 x 8 KiB head costs bounded time; identity names are still flagged by name.
    padding = [("x-junk", "1234567 " * 1024)] * 100
    report = analyse([*padding, ("x-msisdn", "447400900123"), ("x-tag", "447400900123")])
    assert [(f.index, f.kind) for f in report.findings] == [(100, "identity_header")]
    assert MAX_SCANNED_REQUEST_CHARS <= 32 * 1024


def test_json_document() -> None:
    doc = analyse([("host", "h"), ("x-msisdn", "447400900123")]).to_json()
    assert doc == {
        "schema_version": JSON_SCHEMA_VERSION,
        "identity_revealed": True,
        "verdict": "Identity revealed: this site can see your phone number.",
        "revealed": ["phone_number"],
        "findings": [{
            "kind": "phone_number", "header": "x-msisdn", "index": 1,
            "value": "+44 7400 900123",
            "message": "This site can see your phone number +44 7400 900123",
        }],
        "headers": [
            {"name": "host", "value": "h", "flagged": False},
            {"name": "x-msisdn", "value": "447400900123", "flagged": True},
        ],
    }
