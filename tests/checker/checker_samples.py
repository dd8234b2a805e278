"""Real-world header samples for the leak checker's detection table.

Identity samples follow what was seen in the wild: Mulliner's 2010 survey of operator headers
("Privacy Leaks in Mobile Phone Internet Access"), the O2 UK leak of January 2012
(x-up-calling-line-id), Verizon's X-UIDH (2014) and Vodafone's X-VF-ACR, plus the alias
spellings back ends fold together (X_MSISDN, X.MSISDN). Numbers are ones `phonenumbers`
validates (Ofcom's 07700 900xxx drama range is not). Harmless samples are headers that real
browsers, CDNs, load balancers and shops send, chosen to be close calls: digit runs, UUIDs,
timestamps, public forwarding addresses, device profiles.
"""

from __future__ import annotations

from dataclasses import dataclass

from linewarden.checker import FindingKind


@dataclass(frozen=True)
class Sample:
    name: str
    value: str
    expected: FindingKind | None  # None: must not be flagged
    source: str  # where this shape of header comes from

    @property
    def id(self) -> str:
        return f"{self.name}={self.value[:40]}"


def identity(name: str, value: str, kind: FindingKind, source: str) -> Sample:
    return Sample(name, value, kind, source)


def harmless(name: str, value: str, source: str) -> Sample:
    return Sample(name, value, None, source)


IDENTITY_SAMPLES: tuple[Sample, ...] = (
    # --- MSISDN in the classic header names (E.164 without the plus) ---
    identity("x-up-calling-line-id", "447400900123", "phone_number", "O2 UK leak, Jan 2012"),
    identity("X-Up-Calling-Line-ID", "447400123456", "phone_number", "Openwave WAP gateway"),
    identity("x-msisdn", "447400900123", "phone_number", "generic HE, Mulliner 2010"),
    identity("msisdn", "4915123456789", "phone_number", "bare name, German operator"),
    identity("x-nokia-msisdn", "393123456789", "phone_number", "Nokia WAP gateway, Italy"),
    identity("x-wap-msisdn", "33612345678", "phone_number", "French operator WAP gateway"),
    identity("x-h3g-msisdn", "447400900123", "phone_number", "Three UK"),
    identity("x-wap-3gpp-msisdn", "34612345678", "phone_number", "3GPP WAP gateway, Spain"),
    identity("x-wap-network-client-msisdn", "31612345678", "phone_number", "Netherlands"),
    identity("x-msp-msisdn", "27711234567", "phone_number", "MSP gateway, South Africa"),
    identity("x-wte-msisdn", "254712123456", "phone_number", "Kenya"),
    identity("x-fh-msisdn", "2348021234567", "phone_number", "Nigeria"),
    identity("mscope-msisdn", "918123456789", "phone_number", "India"),
    identity("i-msisdn", "61412345678", "phone_number", "Australia"),
    identity("x-bam-msisdn", "5511961234567", "phone_number", "Brazil"),
    identity("x-internet-msisdn", "819012345678", "phone_number", "Japan"),
    identity("x-forwarded-msisdn", "+44 7400 900123", "phone_number", "with plus and spaces"),
    identity("x-hts-clid", "12015550123", "phone_number", "US carrier CLID"),
    identity("x-nx-clid", "447400900123", "phone_number", "CLID variant"),
    identity("x-up-vodacomgw-subid", "27711234567", "phone_number", "Vodacom gateway"),
    # Hex-encoded ASCII digits: some gateways obfuscate this way ("447400900123").
    identity("user-identity-forward-msisdn", "343437343030393030313233", "phone_number",
             "hex-encoded MSISDN, Mulliner 2010"),
    # National forms under identity names (region hint GB).
    identity("x-msisdn", "07400900123", "phone_number", "national format with trunk 0"),
    identity("x-msisdn", "7400900123", "phone_number", "national significant number only"),
    identity("x-msisdn", "tel:+447400900123", "phone_number", "tel: URI (RFC 3966)"),
    # --- alias spellings that CGI/PHP/nginx fold into HTTP_X_MSISDN ---
    identity("x_msisdn", "447400900123", "phone_number", "underscore alias smuggling"),
    identity("X.MSISDN", "447400900123", "phone_number", "dot alias smuggling"),
    identity("X-Calling-Line", "447400900123", "phone_number", "loose suffix callingline"),
    identity("X-Operator-Subscriber-Id", "447400900123", "phone_number", "suffix subscriberid"),
    # --- phone numbers in headers whose names say nothing ---
    identity("x-client-tag", "447400900123", "phone_number", "MSISDN in a custom header"),
    identity("x-network-info", "GPRS,447400900123,10.12.0.5,secured",
             "phone_number", "Opera Mini style info header carrying the MSISDN"),
    identity("cookie", "session=ab12; msisdn=4915123456789", "phone_number",
             "operator-set cookie"),
    identity("referer", "https://portal.example/landing?phone=447400900123", "phone_number",
             "MSISDN in a redirect URL"),
    identity("x-contact", "+33 6 12 34 56 78", "phone_number", "written international"),
    identity("x-contact", "07400 900123", "phone_number", "written national, region GB"),
    identity("from", "00447400900123@mms.operator.example", "phone_number",
             "00-prefixed MSISDN as address"),
    # --- IMSI and IMEI ---
    identity("x-imsi", "234150999999999", "imsi", "Mulliner 2010; MCC 234 (UK)"),
    identity("x-nokia-imsi", "262011234567890", "imsi", "Nokia gateway, MCC 262 (DE)"),
    identity("x-wap-3gpp-imsi", "310260123456789", "imsi", "3GPP gateway, MCC 310 (US)"),
    identity("x-device-sim", "001010000000001", "imsi", "test-network IMSI (MCC 001)"),
    identity("x-network-id", "234159876543210", "imsi", "IMSI under an unrelated name"),
    identity("x-imei", "356938035643809", "imei", "Mulliner 2010"),
    identity("x-device", "490154203237518", "imei", "IMEI under an unrelated name"),
    identity("x-handset", "IMEI:352099001761481", "imei", "labelled IMEI"),
    # --- tracking IDs ---
    identity("x-uidh", "OTgxNTk2NDk0ADJVquRu5NS5+rSbBANlrp+13QL7CXLGsFHpMi4LsUHw",
             "tracking_id", "Verizon UIDH, 2014"),
    identity("x-acr", "bWFsbG9yeUBleGFtcGxlLmNvbQ==", "tracking_id", "anonymous customer ref"),
    identity("x-vf-acr", "204OVXZEsQ3vQh5HpVKC3dTYq1oZ6kWn", "tracking_id", "Vodafone ACR"),
    identity("X_UIDH", "OTgxNTk2NDk0ADJVquRu5NS5", "tracking_id", "underscore alias"),
    # --- internal addresses in forwarding headers ---
    identity("x-forwarded-for", "10.23.45.67, 203.0.113.9", "internal_address",
             "handset address behind the operator proxy"),
    identity("x-forwarded-for", "100.72.14.3", "internal_address", "CGNAT range (RFC 6598)"),
    identity("via", "1.1 192.168.20.4:3128 (squid/3.5.27)", "internal_address",
             "operator proxy's private address"),
    identity("via", "1.1 100.64.12.7 (Nokia WAP Gateway 4.1)", "internal_address",
             "CGNAT in Via"),
    identity("forwarded", "for=172.20.1.5;proto=http;by=203.0.113.43", "internal_address",
             "RFC 7239"),
    identity("forwarded", 'for="[fd12:3456:789a::17]:4711"', "internal_address",
             "IPv6 unique-local (RFC 4193)"),
    identity("x-real-ip", "127.0.0.1", "internal_address", "loopback leaked by nginx"),
    # --- identity names carrying values that are not numbers ---
    identity("x-up-subno", "ppu_105a1a3a1d4_vzw.com", "identity_header", "Openwave SUBNO"),
    identity("x-jinny-cid", "a9f3c2e71b", "identity_header", "Jinny gateway"),
    identity("x-orange-id", "ORA-5f2e9c", "identity_header", "Orange"),
    identity("x-access-subnym", "subnym-83f0a1", "identity_header", "pseudonym header"),
    identity("x-msisdn-alias", "alias-7d1c", "identity_header", "alias header"),
    identity("x-h3g-party-id", "PARTY123ABC", "identity_header", "Three party ID"),
    identity("x-nokia-alias", "nk-alias-1", "identity_header", "Nokia alias"),
    identity("x-subscriber-id", "sub-9f8e7d", "identity_header", "subscriber ID"),
    identity("x-att-deviceid", "SAMSUNG-SGH-I747/I747UCDLK3", "identity_header", "AT&T"),
    identity("x-msisdn", "", "identity_header", "empty identity header still present"),
)

HARMLESS_SAMPLES: tuple[Sample, ...] = (
    harmless("host", "checker.example:8080", "request target"),
    harmless("user-agent", "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 "
             "(KHTML, like Gecko) Chrome/124.0.6367.82 Mobile Safari/537.36", "Chrome Android"),
    harmless("user-agent", "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) "
             "AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 "
             "Safari/604.1", "Safari iOS"),
    harmless("user-agent", "Nokia6300/2.0 (05.00) Profile/MIDP-2.0 Configuration/CLDC-1.1",
             "feature phone"),
    harmless("user-agent", "Opera/9.80 (J2ME/MIDP; Opera Mini/9.80 (S60; SymbOS; Opera "
             "Mobi/23.348; U; en) Presto/2.5.25 Version/10.54", "Opera Mini"),
    harmless("accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
             "browser"),
    harmless("accept-language", "en-GB,en;q=0.9,de;q=0.8", "browser"),
    harmless("accept-encoding", "gzip, deflate, br, zstd", "browser"),
    harmless("connection", "keep-alive", "browser"),
    harmless("content-length", "1048576", "upload"),
    harmless("content-length", "2147483647", "large upload (2^31 - 1)"),
    harmless("content-type", "multipart/form-data; boundary=----WebKitFormBoundary7MA4YWxkTrZu0gW",
             "form upload"),
    harmless("date", "Thu, 01 Feb 2024 10:00:00 GMT", "HTTP date"),
    harmless("if-modified-since", "Wed, 21 Oct 2015 07:28:00 GMT", "conditional request"),
    harmless("x-request-id", "550e8400-e29b-41d4-a716-446655440000", "UUID request id"),
    harmless("x-correlation-id", "f47ac10b-58cc-4372-a567-0e02b2c3d479", "UUID"),
    harmless("x-order-number", "ORD-2024-000123456", "shop order number"),
    harmless("x-order-id", "98765432", "8-digit order id"),
    harmless("x-invoice", "INV20240201-0042", "invoice reference"),
    harmless("x-timestamp", "1700000000", "Unix seconds"),
    harmless("x-timestamp-ms", "1700000000123", "Unix milliseconds"),
    harmless("x-timestamp", "1706781600.123456", "Unix seconds with fraction"),
    harmless("x-event-time", "2024-02-01T10:00:00.000Z", "ISO 8601"),
    harmless("x-forwarded-for", "203.0.113.7, 198.51.100.23", "public addresses (doc ranges)"),
    harmless("x-forwarded-for", "8.8.8.8", "public address"),
    harmless("x-forwarded-for", "2001:db8:85a3::8a2e:370:7334", "public IPv6 (doc range)"),
    harmless("via", "1.1 varnish (Varnish/7.1)", "CDN"),
    harmless("via", "1.1 proxy.example.net, 1.0 fred", "RFC 9110 example"),
    harmless("forwarded", "for=198.51.100.17;proto=https;by=203.0.113.60", "RFC 7239 public"),
    harmless("x-forwarded-proto", "https", "load balancer"),
    harmless("x-forwarded-port", "443", "load balancer"),
    harmless("cache-control", "max-age=0", "reload"),
    harmless("range", "bytes=0-1023", "partial download"),
    harmless("etag", '"33a64df551425fcc55e4d42a148795d9f25f89d4"', "strong validator"),
    harmless("if-none-match", 'W/"0815"', "weak validator"),
    harmless("upgrade-insecure-requests", "1", "browser"),
    harmless("dnt", "1", "browser"),
    harmless("sec-ch-ua", '"Chromium";v="124", "Google Chrome";v="124", "Not-A.Brand";v="99"',
             "client hints"),
    harmless("sec-fetch-site", "none", "fetch metadata"),
    harmless("x-wap-profile", '"http://nds1.nds.nokia.com/uaprof/N6300r100.xml"',
             "UAProf device profile (sent by HE gateways; not personal)"),
    harmless("x-amzn-trace-id", "Root=1-65bb1c2a-0d3e8a7b4c5f6a1b2c3d4e5f", "AWS ALB"),
    harmless("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
             "W3C trace context"),
    harmless("x-cloud-trace-context", "105445aa7843bc8bf206b12000100000/1;o=1", "GCP"),
    harmless("cookie", "_ga=GA1.2.1234567890.1700000000; _gid=GA1.2.987654321.1700000000",
             "analytics cookie"),
    harmless("authorization", "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl",
             "JWT"),
    harmless("referer", "https://shop.example/products/12345?page=2", "product page"),
    harmless("x-nokia-gateway-id", "NWG/4.1/Build4.1.06", "gateway software"),
    harmless("x-nokia-connection_mode", "TCP", "gateway connection mode"),
    harmless("x-network-type", "LTE", "bearer info"),
    harmless("max-forwards", "10", "TRACE/OPTIONS"),
    harmless("x-ticket", "120000000000001", "15-digit ticket number (not Luhn, MCC 120 unused)"),
    harmless("x-session", "123456789012345", "15-digit id failing Luhn, MCC 123 unused"),
    harmless("x-build", "20240201100000", "yyyymmddhhmmss build stamp"),
    harmless("x-price", "1299.00", "price"),
    harmless("x-geo", "51.5074,-0.1278", "coordinates"),
    harmless("content-md5", "Q2hlY2sgSW50ZWdyaXR5IQ==", "body digest"),
    harmless("x-csrf-token", "a3f9c0e1b2d4e6f8a0c2e4f6a8b0d2e4", "hex token"),
    harmless("accept-charset", "utf-8, iso-8859-1;q=0.5", "browser"),
    harmless("x-real-ip", "81.2.69.142", "public address via nginx"),
)
