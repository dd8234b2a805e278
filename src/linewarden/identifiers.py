"""Subscriber identifiers: MSISDN (E.164) checks and masking, IMSI country codes, IMEI check digit.

Pure functions and one table, shared by the leak checker, the log scanner, the binding
stores and the config, so that what counts as a number or an IMSI is decided in one place.
"""

from __future__ import annotations

import phonenumbers

__all__ = [
    "E164_MAX_DIGITS",
    "E164_MIN_DIGITS",
    "MOBILE_COUNTRY_CODES",
    "e164_digits",
    "is_possible_msisdn",
    "luhn_valid",
    "mask_msisdn",
]

# E.164 caps a number at 15 digits, country code included (ITU-T E.164 §6.1); the shortest
# numbers in use have 7 (e.g. +290 xxxx, Tristan da Cunha).
E164_MIN_DIGITS = 7
E164_MAX_DIGITS = 15

# ITU-T E.212 mobile country codes: the geographic codes 202-750 in force in 2024 (225 is
# Vatican City), 901 (international networks: satellite and roaming IoT SIMs), and the two
# codes E.212 reserves for SIMs outside public networks, 001 (test networks: lab SIMs and
# open-source cores use 001-01) and 999 (private LTE/5G networks). An IMSI is MCC (3 digits)
# + MNC (2-3) + MSIN, 15 digits in all (3GPP TS 23.003 §2.2).
_MCC_TABLE = """
    001
    202 204 206 208 212 213 214 216 218 219 220 221 222 225 226 228 230 231 232 234 235
    238 240 242 244 246 247 248 250 255 257 259 260 262 266 268 270 272 274 276 278 280
    282 283 284 286 288 289 290 292 293 294 295 297
    302 308 310 311 312 313 314 315 316 330 332 334 338 340 342 344 346 348 350 352 354
    356 358 360 362 363 364 365 366 368 370 372 374 376
    400 401 402 404 405 406 410 412 413 414 415 416 417 418 419 420 421 422 424 425 426
    427 428 429 430 431 432 434 436 437 438 440 441 450 452 454 455 456 457 460 461 466
    467 470 472
    502 505 510 514 515 520 525 528 530 536 537 539 540 541 542 543 544 545 546 547 548
    549 550 551 552 553 554 555
    602 603 604 605 606 607 608 609 610 611 612 613 614 615 616 617 618 619 620 621 622
    623 624 625 626 627 628 629 630 631 632 633 634 635 636 637 638 639 640 641 642 643
    645 646 647 648 649 650 651 652 653 654 655 657 658 659
    702 704 706 708 710 712 714 716 722 724 730 732 734 736 738 740 742 744 746 748 750
    901 999
"""
MOBILE_COUNTRY_CODES: frozenset[str] = frozenset(_MCC_TABLE.split())


def luhn_valid(digits: str) -> bool:
    """The Luhn check (ISO/IEC 7812-1 Annex B) over ASCII digits: the IMEI's check digit
    (3GPP TS 23.003 §6.2.1)."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        digit = ord(char) - 48
        if position % 2:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


def is_possible_msisdn(value: str) -> bool:
    """E.164 digits, with or without '+', that phonenumbers deems a possible number."""
    digits = value.removeprefix("+")
    if not digits.isdigit() or not E164_MIN_DIGITS <= len(digits) <= E164_MAX_DIGITS:
        return False
    try:
        return bool(phonenumbers.is_possible_number(phonenumbers.parse("+" + digits)))
    except phonenumbers.NumberParseException:
        return False


def e164_digits(value: str) -> str:
    """A configured MSISDN as E.164 digits without '+', or a clear error."""
    if not is_possible_msisdn(value):
        raise ValueError(f"'{value}' is not a possible E.164 number (e.g. 447400900123)")
    return value.lstrip("+")


def mask_msisdn(msisdn: str) -> str:
    """All but the last three digits hidden: enough to tell subscribers apart in a list."""
    return "*" * max(len(msisdn) - 3, 0) + msisdn[-3:]
