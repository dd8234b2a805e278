"""A labeled log corpus: access logs, nginx JSON logs, header dumps and app logs.

Each record knows the exact byte spans of the identity it carries (its labels), and is
salted with look-alikes that must never be reported: IPv4 addresses, dates, timestamps,
epoch seconds and milliseconds, byte counts, ports, durations, UUIDs, order ids and
credit-card-like digit groups. Used by the tests (recall/precision, redaction diffs) and by
bench/scan.py (throughput on a large file).

Look-alikes are drawn so they are *not* numbers in any accepted form (they never start with
`+`, `00`, `0` or `44`): a bare `07400900123` order id is, in a log, indistinguishable from a
UK number and is reported as one by design (docs/scan.md).
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import phonenumbers
from phonenumbers import PhoneNumberFormat as Fmt

# Regions whose *mobile* numbers the corpus writes in international form only.
FOREIGN_REGIONS = ("US", "FR", "DE", "IN", "BR", "NG", "ES", "IT", "AU", "JP", "ZA", "SE")
# Crown dependencies share +44; the issue asks that they count as UK-range mobiles.
UK_REGIONS = ("GB", "GB", "GB", "JE", "GG", "IM")


@dataclass(frozen=True)
class Label:
    start: int
    end: int
    kind: str
    value: str


@dataclass
class Record:
    text: bytes = b""
    labels: list[Label] = field(default_factory=list)

    def add(self, piece: str | bytes) -> None:
        self.text += piece.encode("latin-1") if isinstance(piece, str) else piece

    def add_label(self, piece: str, kind: str, value: str) -> None:
        start = len(self.text)
        self.add(piece)
        self.labels.append(Label(start, len(self.text), kind, value))


def _luhn_digit(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return str((10 - total % 10) % 10)


class Corpus:
    """Deterministic generator of labeled records (one or more lines each).

    `identity_rate` scales every chance of a record carrying an identity (1.0: the dense
    labeled corpus, about one identity per two lines). `subscribers`, if set, draws numbers
    from a pool that grows slowly, so the same subscribers recur as in a real log.
    bench/scan.py uses both for its realistic-density log (about one number per 50 lines).
    """

    def __init__(
        self, seed: int = 1, identity_rate: float = 1.0, subscribers: int | None = None
    ) -> None:
        self.rng = random.Random(seed)
        self.rate = identity_rate
        self.subscribers = subscribers
        self._pool: dict[str, list[phonenumbers.PhoneNumber]] = {}
        self._examples = {
            r: phonenumbers.example_number_for_type(r, phonenumbers.PhoneNumberType.MOBILE)
            for r in (*FOREIGN_REGIONS, *set(UK_REGIONS))
        }

    # -- true identities ------------------------------------------------------------------

    def number(self, region: str) -> phonenumbers.PhoneNumber:
        """A random valid mobile number of `region` (from the subscriber pool if there is one)."""
        if self.subscribers is None:
            return self._new_number(region)
        # Up to `subscribers` numbers in all: a new one now and then, else a repeat.
        pool = self._pool.setdefault(region, [])
        if not pool or (len(pool) < self.subscribers and self.rng.random() < 0.1):
            pool.append(self._new_number(region))
            return pool[-1]
        return self.rng.choice(pool)

    def _new_number(self, region: str) -> phonenumbers.PhoneNumber:
        """A random valid mobile number of `region`: its example with random trailing digits."""
        example = self._examples[region]
        nsn = str(example.national_number)
        for _ in range(200):
            tail = "".join(self.rng.choice("0123456789") for _ in range(5))
            candidate = phonenumbers.parse(f"+{example.country_code}{nsn[:-5]}{tail}")
            if phonenumbers.is_valid_number(candidate):
                return candidate
        return example

    def uk_written(self) -> tuple[str, str]:
        """A UK-range mobile in one of the forms people and logs write, and its E.164."""
        num = self.number(self.rng.choice(UK_REGIONS))
        e164 = phonenumbers.format_number(num, Fmt.E164)
        nsn = e164[3:]
        forms = [
            e164,
            phonenumbers.format_number(num, Fmt.INTERNATIONAL),
            "00" + e164[1:],
            "0044 " + nsn[:4] + " " + nsn[4:],
            "0" + nsn,
            "0" + nsn[:4] + " " + nsn[4:],
            e164[1:],
            "+44 (0)" + nsn[:4] + " " + nsn[4:],
            "+44-" + nsn[:4] + "-" + nsn[4:],
            "%2B" + e164[1:],
        ]
        return self.rng.choice(forms), e164

    def foreign_written(self) -> tuple[str, str]:
        num = self.number(self.rng.choice(FOREIGN_REGIONS))
        e164 = phonenumbers.format_number(num, Fmt.E164)
        forms = [e164, phonenumbers.format_number(num, Fmt.INTERNATIONAL), "00" + e164[1:]]
        return self.rng.choice(forms), e164

    def any_number(self) -> tuple[str, str]:
        return self.uk_written() if self.rng.random() < 0.6 else self.foreign_written()

    def imei(self) -> str:
        body = self.rng.choice(("35", "86", "01", "99")) + "".join(
            self.rng.choice("0123456789") for _ in range(12)
        )
        return body + _luhn_digit(body)

    def imsi(self) -> str:
        mcc_mnc = self.rng.choice(("23410", "23415", "23430", "20801", "26201", "310260"))
        return mcc_mnc + "".join(self.rng.choice("0123456789") for _ in range(15 - len(mcc_mnc)))

    def token(self) -> str:
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
        return "".join(self.rng.choice(alphabet) for _ in range(24)) + "=="

    # -- look-alikes ----------------------------------------------------------------------

    def ip(self) -> str:
        return ".".join(str(self.rng.randint(1, 254)) for _ in range(4))

    def digits(self, n: int) -> str:
        """n random digits that are no number form: first digit 1-9 and never `44`."""
        first = self.rng.choice("12356789")
        return first + "".join(self.rng.choice("0123456789") for _ in range(n - 1))

    def card(self) -> str:
        body = "4" + "".join(self.rng.choice("0123456789") for _ in range(14))
        card = body + _luhn_digit(body)
        if self.rng.random() < 0.5:
            return " ".join(card[i:i + 4] for i in range(0, 16, 4))
        return card

    def timestamp(self) -> str:
        r = self.rng
        return (f"{r.randint(1, 28):02d}/{r.choice(('Jan', 'Feb', 'Oct'))}/20{r.randint(10, 26)}:"
                f"{r.randint(0, 23):02d}:{r.randint(0, 59):02d}:{r.randint(0, 59):02d} +0000")

    def iso_time(self) -> str:
        r = self.rng
        return (f"20{r.randint(10, 26)}-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}T"
                f"{r.randint(0, 23):02d}:{r.randint(0, 59):02d}:{r.randint(0, 59):02d}."
                f"{r.randint(0, 999):03d}Z")

    def uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def noise(self) -> str:
        """A query-string or message fragment made only of look-alikes."""
        r = self.rng
        options: list[Callable[[], str]] = [
            lambda: f"order={self.digits(r.choice((8, 9, 10, 12, 13, 14, 16, 18, 20)))}",
            lambda: f"ts={self.digits(10)}",
            lambda: f"ms={self.digits(13)}",
            lambda: f"card={self.card()}",
            lambda: f"upstream={self.ip()}:{r.randint(1024, 65535)}",
            lambda: f"rid={self.uuid()}",
            lambda: f"t={r.randint(0, 9)}.{r.randint(0, 999):03d}",
            lambda: f"size={r.randint(100, 99999999)}",
            lambda: f"v=1.{r.randint(0, 99)}.{r.randint(0, 9999)}",
            lambda: f"date=20{r.randint(10, 26)}-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}",
        ]
        return "&".join(r.choice(options)() for _ in range(r.randint(1, 3)))

    # -- records ----------------------------------------------------------------------------

    def access_log(self) -> Record:
        r = self.rng
        rec = Record()
        rec.add(f'{self.ip()} - - [{self.timestamp()}] "GET /p/{self.digits(6)}?{self.noise()}')
        if r.random() < 0.5 * self.rate:
            written, e164 = self.any_number()
            rec.add(f"&{r.choice(('msisdn', 'phone', 'to', 'cli'))}=")
            # `msisdn=` makes it a header-like key; the value is a number either way.
            rec.add_label(written, "msisdn", e164)
        rec.add(f' HTTP/1.1" {r.choice((200, 301, 404, 500))} {r.randint(0, 9999999)} "-" ')
        rec.add(f'"Mozilla/5.0 (Linux; Android {r.randint(8, 14)}) ')
        rec.add(f'Chrome/120.0.{self.digits(4)}.{r.randint(1, 200)}"')
        if r.random() < 0.3 * self.rate:
            # Apache `%{X-Up-Calling-Line-ID}i`: the value alone, E.164 without the plus.
            e164 = phonenumbers.format_number(self.number(r.choice(UK_REGIONS)), Fmt.E164)
            rec.add(' "')
            rec.add_label(e164[1:], "msisdn", e164)
            rec.add('"')
        rec.add(f" {r.randint(0, 9)}.{r.randint(0, 999):03d}\n")
        return rec

    def nginx_json(self) -> Record:
        r = self.rng
        rec = Record()
        fields: list[tuple[str, str | int | float, str | None]] = [
            ("time_iso8601", self.iso_time(), None),
            ("remote_addr", self.ip(), None),
            ("request", f"GET /api/v1/items/{self.digits(9)}?{self.noise()} HTTP/1.1", None),
            ("status", r.choice((200, 204, 404)), None),
            ("body_bytes_sent", r.randint(0, 10**7), None),
            ("request_time", round(r.random() * 3, 3), None),
            ("upstream_addr", f"{self.ip()}:{r.randint(1024, 65535)}", None),
            ("request_id", self.uuid().replace("-", ""), None),
        ]
        roll = r.random()
        if roll < 0.4 * self.rate:
            e164 = phonenumbers.format_number(self.number(r.choice(UK_REGIONS)), Fmt.E164)
            fields.append(("http_x_msisdn", e164[1:], "msisdn:" + e164))
        elif roll < 0.5:
            fields.append(("http_x_msisdn", "-", None))
        if r.random() < 0.15 * self.rate:
            fields.append(("http_x_uidh", (tok := self.token()), "identity:" + tok))
        if r.random() < 0.15 * self.rate:
            fields.append(("http_x_imsi", (imsi := self.imsi()), "imsi:" + imsi))
        if r.random() < 0.2 * self.rate:
            written, e164 = self.foreign_written()
            fields.append(("message", f"sms to {written} queued", "inner:" + e164 + ":" + written))
        rec.add("{")
        for i, (key, value, label) in enumerate(fields):
            rec.add(("," if i else "") + json.dumps(key) + ":")
            if label is None:
                rec.add(json.dumps(value))
            elif label.startswith("inner:"):
                _, e164, written = label.split(":", 2)
                text = str(value)
                at = text.index(written)
                rec.add('"' + text[:at])
                rec.add_label(written, "msisdn", e164)
                rec.add(text[at + len(written):] + '"')
            else:
                kind, val = label.split(":", 1)
                rec.add('"')
                rec.add_label(str(value), kind, val)
                rec.add('"')
        rec.add("}\n")
        return rec

    def header_dump(self) -> Record:
        r = self.rng
        rec = Record()
        rec.add(f"GET /check?{self.noise()} HTTP/1.1\r\nHost: www.example.com\r\n")
        rec.add(f"X-Forwarded-For: {self.ip()}\r\n")
        name = r.choice(("X-Up-Calling-Line-ID", "X-MSISDN", "X_WAP_MSISDN", "x-nokia-msisdn",
                         "X-H3G-MSISDN", "Msisdn"))
        written, e164 = self.uk_written()
        rec.add(f"{name}: ")
        rec.add_label(written, "msisdn", e164)
        rec.add("\r\n")
        if r.random() < 0.4:
            rec.add("X-IMEI: ")
            rec.add_label(imei := self.imei(), "imei", imei)
            rec.add("\r\n")
        if r.random() < 0.3:
            rec.add(f"{r.choice(('X-ACR', 'X-Orange-ID', 'X-Access-Subnym'))}: ")
            rec.add_label(tok := self.token(), "identity", tok)
            rec.add("\r\n")
        rec.add(f"User-Agent: Nokia{self.digits(4)}/2.0 (05.{r.randint(10, 99)}) ")
        rec.add("Profile/MIDP-2.0\r\n")
        rec.add(f"Date: {self.timestamp()}\r\nContent-Length: {r.randint(0, 99999)}\r\n\r\n")
        return rec

    def app_log(self) -> Record:
        r = self.rng
        rec = Record()
        rec.add(f"{self.iso_time()} INFO [worker-{r.randint(1, 16)}] pid={r.randint(100, 99999)} ")
        rec.add(f"{self.noise()} ")
        roll = r.random()
        if roll < 0.45 * self.rate:
            written, e164 = self.any_number()
            rec.add("SMS delivered to ")
            rec.add_label(written, "msisdn", e164)
        elif roll < 0.55 * self.rate:
            rec.add("device ")
            rec.add_label(imei := self.imei(), "imei", imei)
            rec.add(" attached")
        else:
            rec.add(f"card {self.card()} charged {r.randint(1, 999)}.{r.randint(0, 99):02d} GBP")
        rec.add(f" took {r.randint(1, 5000)}ms from {self.ip()}\n")
        return rec

    def records(self) -> Iterator[Record]:
        makers = (self.access_log, self.nginx_json, self.header_dump, self.app_log)
        # A header dump always carries an identity: it is as rare as identities are.
        weights = (4, 3, self.rate, 2)
        while True:
            yield self.rng.choices(makers, weights)[0]()


def build(n_records: int, seed: int = 1) -> tuple[bytes, list[Label]]:
    """Concatenated records and their labels with offsets into the whole text."""
    out = bytearray()
    labels: list[Label] = []
    gen = Corpus(seed).records()
    for _ in range(n_records):
        rec = next(gen)
        base = len(out)
        out += rec.text
        labels.extend(Label(base + lb.start, base + lb.end, lb.kind, lb.value) for lb in rec.labels)
    return bytes(out), labels


def build_bytes(target: int, seed: int = 1) -> bytes:
    """About `target` bytes of corpus text (labels dropped), for throughput runs."""
    out = bytearray()
    gen = Corpus(seed).records()
    while len(out) < target:
        out += next(gen).text
    return bytes(out)


def build_to(
    target: int, seed: int = 1, identity_rate: float = 1.0, subscribers: int | None = None
) -> tuple[bytes, list[Label]]:
    """About `target` bytes of labeled corpus (see `Corpus` for the density options)."""
    out = bytearray()
    labels: list[Label] = []
    gen = Corpus(seed, identity_rate, subscribers).records()
    while len(out) < target:
        rec = next(gen)
        base = len(out)
        out += rec.text
        labels.extend(Label(base + lb.start, base + lb.end, lb.kind, lb.value) for lb in rec.labels)
    return bytes(out), labels
