"""PII detectors: what each entity type looks like and the check that a match is one (tuneforge data scrub).

Each rule finds candidates with a regular expression and keeps those its validator accepts: a checksum where the
type has one (IBAN mod-97, card Luhn, the national ids' check digits), the ranges never issued (US SSN), Google's
libphonenumber for phone numbers, the standard library's ipaddress for IPs. The checksums are python-stdnum's;
what stdnum lacks (the UK NINO, e-mail addresses, credentials in URLs, card issuer prefixes) is written here.
Person names come from an NER backend (pii_ner.py), never from these rules. docs/privacy.md lists the rules.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from tuneforge.data.schema import DataError

PII_EXTRA = "pip install 'tuneforge[pii]'"
DEFAULT_PHONE_REGIONS = ("US", "GB", "DE", "FR", "IN")


@dataclass(frozen=True)
class Finding:
    """One detected value: text[start:end] is the original; `key` is its normal form (one placeholder per key)."""

    type: str
    start: int
    end: int
    key: str


Find = Callable[[str, "Rules"], Iterator[Finding]]


@dataclass(frozen=True)
class Rule:
    find: Find
    summary: str


@dataclass(frozen=True)
class Rules:
    """Which rule types run and the regions whose national phone formats are read (+international always)."""

    types: tuple[str, ...]
    phone_regions: tuple[str, ...] = DEFAULT_PHONE_REGIONS


@functools.cache
def _stdnum() -> dict[str, ModuleType]:
    try:
        from stdnum import iban, luhn
        from stdnum.es import dni, nie
        from stdnum.fr import nir
        from stdnum.in_ import aadhaar
        from stdnum.it import codicefiscale
        from stdnum.us import ssn
    except ImportError as e:
        raise DataError(f"PII scrubbing needs python-stdnum ({e}): {PII_EXTRA}") from None
    return {
        "iban": iban,
        "luhn": luhn,
        "ssn": ssn,
        "nir": nir,
        "dni": dni,
        "nie": nie,
        "aadhaar": aadhaar,
        "codicefiscale": codicefiscale,
    }


@functools.cache
def _phonenumbers() -> Any:
    try:
        import phonenumbers
    except ImportError as e:
        raise DataError(f"PII scrubbing needs phonenumbers ({e}): {PII_EXTRA}") from None
    return phonenumbers


def check_installed() -> None:
    """A DataError naming the extra when the rules' libraries are missing (before any file is read)."""
    _stdnum()
    _phonenumbers()


def check_regions(regions: Sequence[str]) -> None:
    """Phone regions must be libphonenumber's (ISO 3166 alpha-2): an unknown one would read no number, silently."""
    if bad := [r for r in regions if r not in _phonenumbers().SUPPORTED_REGIONS]:
        raise DataError(f"unknown phone region(s) {', '.join(bad)}: two-letter ISO 3166 codes such as US, GB, DE")


def _valid(module: str, value: str) -> bool:
    return bool(_stdnum()[module].is_valid(value))


def _compact(text: str) -> str:
    return re.sub(r"[\s.-]", "", text).upper()


def _prefixes(text: str, min_len: int) -> Iterator[str]:
    """`text` and its shorter forms cut at a separator, longest first: a regex over grouped digits may have taken a
    following group ("4111 1111 1111 1111 2024") that the checksum then refuses."""
    yield text
    for m in reversed(list(re.finditer(r"[\s-]+", text))):
        head = text[: m.start()]
        if len(_compact(head)) >= min_len:
            yield head


# --- e-mail and URL credentials (no library validates these: the forms are what RFC 5322 / 3986 allow in practice)

_EMAIL = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![\w-])"
)
# scheme://user:password@host: the user and password are replaced, the scheme and host kept
_URL_CREDENTIALS = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://([^\s/:@]+:[^\s/@]*)@[^\s/@]+")


def _email(text: str, rules: Rules) -> Iterator[Finding]:
    for m in _EMAIL.finditer(text):
        yield Finding("EMAIL", m.start(), m.end(), m.group().lower())


def _url_credentials(text: str, rules: Rules) -> Iterator[Finding]:
    for m in _URL_CREDENTIALS.finditer(text):
        yield Finding("URL_CREDENTIALS", m.start(1), m.end(1), m.group(1))


# --- numbers with a checksum

_IBAN = re.compile(r"\b[A-Za-z]{2}\d{2}(?:[A-Za-z0-9]{11,30}|(?: [A-Za-z0-9]{4}){2,7}(?: [A-Za-z0-9]{1,4})?)\b")
_CARD = re.compile(r"(?<![\w.-])\d(?:[ -]?\d){11,18}(?![\w-])")
# issuer prefixes (ISO/IEC 7812 IINs) and the lengths each issues: a Luhn-valid run of digits without one is not
# taken for a card (one random number in ten passes Luhn)
_CARD_ISSUERS = (
    (r"4", (13, 16, 19)),  # Visa
    (r"5[1-5]|2(?:2[2-9]|[3-6]\d|7[01]|720)", (16,)),  # Mastercard
    (r"3[47]", (15,)),  # American Express
    (r"6011|64[4-9]|65", (16, 19)),  # Discover
    (r"30[0-5]|36|38|39", (14, 16, 19)),  # Diners Club
    (r"35(?:2[89]|[3-8]\d)|2131|1800", (15, 16, 19)),  # JCB
    (r"62", (16, 17, 18, 19)),  # UnionPay
    (r"5[06-9]|6\d", (12, 13, 14, 15, 16, 17, 18, 19)),  # Maestro
)


def _card_issuer_ok(digits: str) -> bool:
    return any(re.match(prefix, digits) and len(digits) in lengths for prefix, lengths in _CARD_ISSUERS)


def _iban(text: str, rules: Rules) -> Iterator[Finding]:
    for m in _IBAN.finditer(text):
        for candidate in _prefixes(m.group(), 15):
            if _valid("iban", candidate):
                yield Finding("IBAN", m.start(), m.start() + len(candidate), _compact(candidate))
                break


def _card(text: str, rules: Rules) -> Iterator[Finding]:
    for m in _CARD.finditer(text):
        for candidate in _prefixes(m.group(), 12):
            digits = _compact(candidate)
            if _card_issuer_ok(digits) and _valid("luhn", digits):
                yield Finding("CREDIT_CARD", m.start(), m.start() + len(candidate), digits)
                break


# --- national identification numbers

_SSN = re.compile(r"(?<![\w-])\d{3}([- ])\d{2}\1\d{4}(?![\w-])")  # bare 9-digit runs are too ambiguous to take
# HMRC's NINO: two prefix letters (D F I Q U V never; O never second), six digits, suffix A-D; prefixes BG GB KN NK
# NT TN ZZ are never issued. stdnum has no NINO module.
_NINO = re.compile(r"\b(?!BG|GB|KN|NK|NT|TN|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b")
_FR_NIR = re.compile(r"\b[12] ?\d{2} ?(?:0[1-9]|1[0-2]|[2-9]\d) ?(?:\d{2}|2[AB]) ?\d{3} ?\d{3} ?\d{2}\b")
_ES_DNI = re.compile(r"\b(?:\d{8}|[XYZ]\d{7})-?[A-Z]\b")
_IT_FISCAL = re.compile(r"\b[A-Z]{6}[0-9LMNP-V]{2}[A-EHLMPR-T][0-9LMNP-V]{2}[A-Z][0-9LMNP-V]{3}[A-Z]\b")
_IN_AADHAAR = re.compile(r"(?<![\w-])[2-9]\d{3}([ -]?)\d{4}\1\d{4}(?![\w-])")


def _checked(pattern: re.Pattern[str], type_: str, module: str) -> Find:
    def find(text: str, rules: Rules) -> Iterator[Finding]:
        for m in pattern.finditer(text):
            if _valid(module, m.group()):
                yield Finding(type_, m.start(), m.end(), _compact(m.group()))

    return find


def _ssn(text: str, rules: Rules) -> Iterator[Finding]:
    for m in _SSN.finditer(text):
        if _valid("ssn", m.group().replace(" ", "-")):  # stdnum reads dashes only
            yield Finding("US_SSN", m.start(), m.end(), _compact(m.group()))


def _nino(text: str, rules: Rules) -> Iterator[Finding]:
    for m in _NINO.finditer(text):
        yield Finding("UK_NINO", m.start(), m.end(), _compact(m.group()))


def _es_dni(text: str, rules: Rules) -> Iterator[Finding]:
    for m in _ES_DNI.finditer(text):
        if _valid("nie" if m.group()[0] in "XYZ" else "dni", m.group()):
            yield Finding("ES_DNI", m.start(), m.end(), _compact(m.group()))


# --- IP addresses

_IPV4 = re.compile(r"(?<![\w.])\d{1,3}(?:\.\d{1,3}){3}(?![\w]|\.\d)")
_IPV6 = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:\d{1,3}(?:\.\d{1,3}){3}|[0-9A-Fa-f]{1,4})?(?![\w:]|\.\d)")
# "version 1.2.3.4", "v1.2.3.4", "ver. 10.0.0.1": four-part version numbers, not addresses
_VERSION_BEFORE = re.compile(r"(?:\b(?:version|ver\.?|release|build|rev\.?)\s*|\bv)$", re.IGNORECASE)


def _ip(text: str, rules: Rules) -> Iterator[Finding]:
    for m in _IPV4.finditer(text):
        if _VERSION_BEFORE.search(text[max(0, m.start() - 10) : m.start()]):
            continue
        try:
            address = ipaddress.IPv4Address(m.group())  # refuses octets > 255 and leading zeros
        except ValueError:
            continue
        yield Finding("IP_ADDRESS", m.start(), m.end(), str(address))
    for m in _IPV6.finditer(text):
        groups = [g for g in m.group().split(":") if g]
        if len(groups) + ("." in m.group()) < 3:  # "a::b", "::1": code or loopback; a dotted tail is two groups
            continue
        try:
            address6 = ipaddress.IPv6Address(m.group())
        except ValueError:
            continue
        yield Finding("IP_ADDRESS", m.start(), m.end(), str(address6))


# --- phone numbers: libphonenumber finds and validates them (numbering plans of every country)


_SSN_SHAPE = re.compile(r"^\d{3}-\d{2}-\d{4}$")  # an SSN's shape (a refused one included) is no phone format


def _phone(text: str, rules: Rules) -> Iterator[Finding]:
    pn = _phonenumbers()
    seen: set[tuple[int, int]] = set()
    for region in rules.phone_regions:
        for match in pn.PhoneNumberMatcher(text, region, leniency=pn.Leniency.VALID):
            raw = match.raw_string
            if (match.start, match.end) in seen or sum(c.isdigit() for c in raw) < 7 or _SSN_SHAPE.match(raw):
                continue  # 5-6 digits: "valid" short numbers somewhere, mostly zip or house numbers; 123-45-6789: SSN
            seen.add((match.start, match.end))
            key = pn.format_number(match.number, pn.PhoneNumberFormat.E164)
            yield Finding("PHONE", match.start, match.end, key)


# The rule types, in priority order: where two findings overlap, the earlier type wins (a checksum-validated card
# over the phone number its digits might also spell), then the longer finding.
RULES: dict[str, Rule] = {
    "URL_CREDENTIALS": Rule(_url_credentials, "user:password@ in a URL (scheme and host kept)"),
    "EMAIL": Rule(_email, "e-mail addresses"),
    "IBAN": Rule(_iban, "IBANs, compact or in groups of four; country length and mod-97 checked (stdnum)"),
    "CREDIT_CARD": Rule(_card, "12-19 digit card numbers with an issuer prefix; Luhn checked (stdnum)"),
    "US_SSN": Rule(
        _ssn,
        "US SSNs written 123-45-6789 or 123 45 6789; area 000/666/9xx, group 00, "
        "serial 0000 and known advertising numbers refused (stdnum)",
    ),
    "UK_NINO": Rule(_nino, "UK National Insurance numbers; prefixes never issued refused"),
    "FR_NIR": Rule(_checked(_FR_NIR, "FR_NIR", "nir"), "French social security numbers (NIR); key checked (stdnum)"),
    "ES_DNI": Rule(_es_dni, "Spanish DNI and NIE; check letter verified (stdnum)"),
    "IT_FISCAL_CODE": Rule(
        _checked(_IT_FISCAL, "IT_FISCAL_CODE", "codicefiscale"), "Italian codice fiscale; check letter (stdnum)"
    ),
    "IN_AADHAAR": Rule(
        _checked(_IN_AADHAAR, "IN_AADHAAR", "aadhaar"), "Indian Aadhaar numbers (4-4-4 digits); Verhoeff (stdnum)"
    ),
    "IP_ADDRESS": Rule(_ip, "IPv4 and IPv6 addresses (ipaddress); four-part version numbers after v/version kept"),
    "PHONE": Rule(_phone, "phone numbers valid in their numbering plan (libphonenumber), +international anywhere"),
}
PERSON = "PERSON"  # from an NER backend (pii_ner.py)
ALL_TYPES = (*RULES, PERSON)


def find_all(text: str, rules: Rules, extra: Sequence[Finding] = ()) -> list[Finding]:
    """The findings of `rules` in `text` plus `extra` (an NER backend's, ranked last), overlaps resolved by
    priority then length, sorted by position."""
    found = [f for name in rules.types if name in RULES for f in RULES[name].find(text, rules)]
    order = {name: i for i, name in enumerate(ALL_TYPES)}
    ranked = sorted([*found, *extra], key=lambda f: (order.get(f.type, len(order)), f.start - f.end, f.start))
    kept: list[Finding] = []
    for f in ranked:
        if all(f.end <= k.start or f.start >= k.end for k in kept):
            kept.append(f)
    return sorted(kept, key=lambda f: f.start)


def parse_types(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """Entity types from "EMAIL,PHONE" (or a list); None or "all" means every type; unknown names are an error."""
    if text is None or text == "all":
        return ALL_TYPES
    names = [t.strip().upper() for t in (text.split(",") if isinstance(text, str) else text) if t.strip()]
    unknown = [t for t in names if t not in ALL_TYPES]
    if unknown or not names:
        raise DataError(f"unknown PII type(s) {', '.join(unknown) or '(none given)'}; known: {', '.join(ALL_TYPES)}")
    return tuple(dict.fromkeys(names))


__all__ = ["ALL_TYPES", "DEFAULT_PHONE_REGIONS", "PERSON", "PII_EXTRA", "RULES", "Finding", "Rules", "find_all"]
