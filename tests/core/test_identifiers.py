"""identifiers.py: the one MCC table, the Luhn check, MSISDN checks and masking."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from linewarden.checker import analyse
from linewarden.identifiers import (
    MOBILE_COUNTRY_CODES,
    e164_digits,
    is_possible_msisdn,
    luhn_valid,
    mask_msisdn,
)
from linewarden.scan.detect import Detector, is_imsi


def _luhn_reference(digits: str) -> bool:
    # Written the other way round: double every second digit from the right by string slicing.
    doubled = "".join(str(int(d) * 2) for d in digits[-2::-2])
    kept = digits[::-2]
    return sum(int(d) for d in doubled + kept) % 10 == 0


@given(st.from_regex(r"[0-9]{1,20}", fullmatch=True))
def test_luhn_matches_a_reference(digits: str) -> None:
    assert luhn_valid(digits) == _luhn_reference(digits)


def test_the_table_holds_the_codes_both_tables_had_and_the_three_that_differed() -> None:
    # 225 (Vatican City, E.212), 001 (test networks) and 999 (private networks) were in the
    # checker's table only; the scanner now reads the same table.
    assert {"001", "225", "999", "234", "901"} <= MOBILE_COUNTRY_CODES
    assert len(MOBILE_COUNTRY_CODES) == 241
    assert all(len(code) == 3 and code.isdigit() for code in MOBILE_COUNTRY_CODES)
    assert "111" not in MOBILE_COUNTRY_CODES


def test_checker_and_scanner_agree_on_imsi_country_codes() -> None:
    detector = Detector(("GB",))
    for code in ("001", "225", "999", "234"):
        body = code + "01000000000"
        # The check digit that fails Luhn, so the value is not an IMEI.
        imsi = next(body + d for d in "0123456789" if not luhn_valid(body + d))
        assert is_imsi(imsi)
        assert [f.kind for f in detector.scan(f"sim {imsi}\n".encode())] == ["imsi"]
        report = analyse([("x-device-sim", imsi)])
        assert [f.kind for f in report.findings] == ["imsi"]


def test_msisdn_helpers() -> None:
    assert is_possible_msisdn("+447400900123") and is_possible_msisdn("447400900123")
    assert not is_possible_msisdn("44740") and not is_possible_msisdn("+44 7400 900123")
    assert e164_digits("+447400900123") == "447400900123"
    assert mask_msisdn("447400900123") == "*********123"
