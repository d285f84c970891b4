"""Make a session document safe to carry out of a closed network.

Host names, IP addresses, distinguished-name values, serials, fingerprints and file names are
replaced by pseudonyms from one table, so the story of a failure survives while the names do not:
the same original is the same pseudonym wherever it occurs (SNI, a SAN, the CN inside a subject,
``subject_cn``, the connection target, a CertificateRequest's CA list, a finding's sentence).
DNs are rewritten attribute by attribute through that table, so ``CN=x`` in a subject and
``subject_cn = x`` still agree after redaction.  A value becomes a host-looking pseudonym
(``host-3.example``) only when it is used as a host somewhere (SNI, a SAN, a target, an address,
the CN of an end-entity certificate that reads like a DNS name); a CA's name becomes ``name-2``,
an organisation ``org-1``.  IPs map into the documentation ranges, IPv4 and IPv6 apart.

Raw bytes (record payloads, ciphertext, randoms, session ids, renegotiation data) are dropped, so
a redacted file can be read and shown again but not re-analysed.  Findings and diagnoses are kept,
with the same substitutions applied to their text.

Redaction runs in three walks over the document: the first collects every original (and which
names are hosts), the second hands out pseudonyms in order of first appearance, the third writes
the copy, with the full table known before any sentence is rewritten.
"""

from __future__ import annotations

import copy
import ipaddress
import re
from collections.abc import Callable
from typing import Any

from tlsproxy.wire.certs import parse_dn, unescape_dn_value

__all__ = ["Pseudonyms", "redact_document"]

# Keys whose values are raw bytes (or identify them); dropped outright.
_DROP_KEYS = frozenset({"payload", "ciphertext", "random", "session_id", "challenge", "first_line", "first_bytes",
                        "certificate_request_context"})
# Extensions whose decoded value is raw bytes.
_DROP_EXTENSION_VALUES = frozenset({"renegotiation_info"})
# Top-level keys that say what the file is, not what was seen; never rewritten.
_FIXED_TOP_KEYS = frozenset({"tool", "tool_version", "format", "version", "command", "redacted"})

# Pseudonym stems for DN attribute values that are not host names.
_ATTRIBUTE_KINDS = {
    "cn": "name", "o": "org", "ou": "unit", "l": "locality", "st": "state", "c": "country", "street": "street",
    "dc": "domain", "uid": "user", "serialnumber": "number", "sn": "surname", "gn": "given", "title": "title",
    "postalcode": "postcode", "organizationidentifier": "orgid",
}

_IPV4_POOLS = (ipaddress.ip_network("192.0.2.0/24"), ipaddress.ip_network("198.51.100.0/24"),
               ipaddress.ip_network("203.0.113.0/24"))
_HOST_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)")
# A match must not sit inside a longer name or word: "a.example" is not replaced inside
# "b.a.example", "tests" not inside "tests2"; a sentence's final dot is not part of a name.
_BEFORE = r"(?<![\w.@-])"
_AFTER = r"(?![\w@-]|\.\w)"


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _looks_like_host(name: str) -> bool:
    """A DNS name with at least two labels (``*.`` allowed first), as a leaf's CN often is."""
    labels = name.lower().rstrip(".").split(".")
    if labels and labels[0] == "*":
        labels = labels[1:]
    return len(labels) >= 2 and all(_HOST_LABEL.fullmatch(label) for label in labels)


class Pseudonyms:
    """One table of consistent replacements, handed out in order of first appearance.

    While ``collecting`` is true nothing is replaced: every method records its original (so no
    pseudonym handed out later can equal a real value) and, for host names, that the name is a
    host.  Afterwards the same calls return pseudonyms.
    """

    def __init__(self) -> None:
        self.map: dict[str, str] = {}  # original spelling -> pseudonym
        self.collecting = False
        self._folded: dict[str, str] = {}  # case-folded host name or e-mail -> pseudonym
        self._hosts: set[str] = set()  # case-folded names used as hosts somewhere
        self._taken: set[str] = set()  # case-folded originals and pseudonyms: never handed out again
        self._counts: dict[str, int] = {}

    # -- allocation ----------------------------------------------------------------------------

    def _note(self, original: str) -> None:
        self._taken.add(original.casefold())

    def _fresh(self, kind: str, make: Callable[[int], str]) -> str:
        while True:
            n = self._counts[kind] = self._counts.get(kind, 0) + 1
            candidate = make(n)
            if candidate.casefold() not in self._taken:
                self._taken.add(candidate.casefold())
                return candidate

    def _remember(self, original: str, pseudonym: str) -> str:
        self.map[original] = pseudonym
        return pseudonym

    # -- kinds of values -----------------------------------------------------------------------

    def is_host(self, name: str) -> bool:
        return name.casefold().rstrip(".") in self._hosts

    def host(self, name: str) -> str:
        """A host name or an IP literal (``[v6]`` brackets kept); ``*.x`` keeps its wildcard."""
        if not name:
            return name
        if name.startswith("[") and name.endswith("]") and _ip(name[1:-1]) is not None:
            return f"[{self.ip(name[1:-1])}]" if not self.collecting else name
        if _ip(name) is not None:
            return self.ip(name)
        if name.startswith("*.") and len(name) > 2:
            inner = self.host(name[2:])
            return name if self.collecting else self._remember(name, f"*.{inner}")
        folded = name.casefold().rstrip(".")
        if self.collecting:
            self._hosts.add(folded)
            self._note(name)
            self._note(folded)
            return name
        pseudonym = self._folded.get(folded)
        if pseudonym is None:
            pseudonym = self._folded[folded] = self._fresh("host", lambda n: f"host-{n}.example")
            self._hosts.add(folded)
        return self._remember(name, pseudonym)

    def ip(self, text: str) -> str:
        address = _ip(text)
        if address is None:
            return self.host(text)
        canonical = str(address)
        if self.collecting:
            self._note(text)
            self._note(canonical)
            return text
        pseudonym = self._folded.get(canonical)
        if pseudonym is None:
            if address.version == 6:
                pseudonym = self._fresh("ipv6", lambda n: f"2001:db8::{n:x}")
            else:
                pseudonym = self._fresh("ipv4", _ipv4_pseudonym)
            self._folded[canonical] = pseudonym
        self._remember(canonical, pseudonym)
        return self._remember(text, pseudonym)

    def hostport(self, text: str) -> str:
        """``host:port``, ``[v6]:port``, a bare IPv6 address or a bare host name."""
        if not text or _ip(text) is not None:
            return self.host(text)
        if text.startswith("[") and "]:" in text:
            host, _, port = text[1:].partition("]:")
            if port.isdigit():
                return f"[{self.host(host)}]:{port}" if not self.collecting else text
        host, sep, port = text.rpartition(":")
        if sep and host and port.isdigit() and ":" not in host:
            return f"{self.host(host)}:{port}" if not self.collecting else text
        return self.host(text)

    def attribute(self, kind: str, value: str) -> str:
        """One DN attribute value: a host or IP when it is used as one, else ``name-N``/``org-N``..."""
        if not value:
            return value
        if _ip(value) is not None:
            return self.ip(value)
        if self.is_host(value):
            return self.host(value)
        if kind.casefold() == "emailaddress":
            return self.email(value)
        if self.collecting:
            self._note(value)
            return value
        if value in self.map:  # the same string under another attribute type: the same pseudonym
            return self.map[value]
        stem = _ATTRIBUTE_KINDS.get(kind.casefold(), "value")
        return self._remember(value, self._fresh(stem, lambda n: f"{stem}-{n}"))

    def cn(self, value: str) -> str:
        return self.attribute("CN", value)

    def dn(self, text: str) -> str:
        """An RFC 4514 string, rewritten attribute by attribute; the whole string is remembered
        too, so a sentence quoting it is rewritten in one piece."""
        if not text or text.startswith("<"):  # "<undecodable DN: N bytes>" names nothing
            return text
        rdns = parse_dn(text)
        if rdns is None:
            if self.collecting:
                self._note(text)
                return text
            return self.map.get(text) or self._remember(text, f"CN={self._fresh('dn', lambda n: f'dn-{n}')}")
        parts = []
        for rdn in rdns:
            attrs = []
            for kind, value in rdn:
                if value.startswith("#"):  # BER-encoded value: opaque
                    new = self.opaque(value, "value")
                else:
                    new = _escape_dn_value(self.attribute(kind, unescape_dn_value(value)))
                attrs.append(f"{kind}={new}")
            parts.append("+".join(attrs))
        if self.collecting:
            self._note(text)
            return text
        return self._remember(text, ",".join(parts))

    def email(self, value: str) -> str:
        local, at, domain = value.rpartition("@")
        if not at or not local or not domain:
            return self.opaque(value, "mailbox")
        if self.collecting:
            self.host(domain)
            self._note(value)
            return value
        folded = value.casefold()
        pseudonym = self._folded.get(folded)
        if pseudonym is None:
            user = self._fresh("user", lambda n: f"user-{n}")
            pseudonym = self._folded[folded] = f"{user}@{self.host(domain)}"
        return self._remember(value, pseudonym)

    def fingerprint(self, value: str) -> str:
        """A certificate's SHA-256; its first 16 hex digits (how findings label a certificate
        without a name) map to the same pseudonym."""
        pseudonym = self.opaque(value, "certificate")
        if not self.collecting and len(value) > 16:
            self._remember(value[:16], pseudonym)
        return pseudonym

    def opaque(self, value: str, kind: str) -> str:
        if not value:
            return value
        if self.collecting:
            self._note(value)
            return value
        if value not in self.map:
            self._remember(value, self._fresh(kind, lambda n: f"{kind}-{n}"))
        return self.map[value]

    def other_name(self, value: str) -> str:
        """A SAN that is not a DNS name or IP, as ``type:value``; OIDs are kept, names are not."""
        kind, sep, rest = value.partition(":")
        if not sep:
            return self.opaque(value, "san")
        if kind == "email":
            return f"email:{self.email(rest)}" if not self.collecting else value
        if kind == "dirname":
            return f"dirname:{self.dn(rest)}" if not self.collecting else value
        if kind == "uri":
            return f"uri:{self.opaque(rest, 'uri')}" if not self.collecting else value
        if kind in ("rid", "othername"):
            return value
        return self.opaque(value, "san")

    # -- free text -----------------------------------------------------------------------------

    def text_replacer(self) -> Callable[[str], str]:
        """A function that rewrites every known original inside a sentence.  Host names match
        regardless of case; other values exactly.  Values under three characters are left to the
        structured fields: replacing them in prose garbles it."""
        keys = sorted((k for k in self.map if len(k) >= 3), key=len, reverse=True)
        if not keys:
            return lambda s: s
        hosts = set(self._folded)
        alternatives = [f"(?i:{re.escape(k)})" if k.casefold().rstrip(".") in hosts else re.escape(k) for k in keys]
        pattern = re.compile(f"{_BEFORE}(?:{'|'.join(alternatives)}){_AFTER}")

        def replace(match: re.Match[str]) -> str:
            found = match.group(0)
            return self.map.get(found) or self._folded.get(found.casefold().rstrip("."), found)

        return lambda s: pattern.sub(replace, s)


def _ipv4_pseudonym(n: int) -> str:
    pool, index = divmod(n - 1, 254)
    if pool < len(_IPV4_POOLS):
        return str(_IPV4_POOLS[pool].network_address + index + 1)
    return str(ipaddress.ip_address("240.0.0.0") + n)  # reserved (class E): never a real peer


# -- distinguished names -------------------------------------------------------------------------


def _escape_dn_value(value: str) -> str:
    out = re.sub(r'([\\,+"<>;=])', r"\\\1", value)
    if out.startswith(("#", " ")):
        out = "\\" + out
    if out.endswith(" "):
        out = out[:-1] + "\\ "
    return out


# -- the document ----------------------------------------------------------------------------------

_Handler = Callable[[Any, Pseudonyms], Any]
_UNHANDLED = object()


def _strings(fn: Callable[[Pseudonyms, str], str]) -> _Handler:
    """A handler for a field holding a string or a list of strings (anything else is walked)."""

    def handle(value: Any, p: Pseudonyms) -> Any:
        if isinstance(value, str):
            return fn(p, value)
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return [fn(p, v) for v in value]
        return _UNHANDLED

    return handle


def _listener_address(value: Any, p: Pseudonyms) -> Any:
    if isinstance(value, str):
        return p.hostport(value)
    if isinstance(value, list) and value and isinstance(value[0], str):
        return [p.host(value[0]), *value[1:]]
    return _UNHANDLED


_FIELDS: dict[str, _Handler] = {
    "host": _strings(Pseudonyms.host),
    "upstream_host": _strings(Pseudonyms.host),
    "sni": _strings(Pseudonyms.host),
    "checked": _strings(Pseudonyms.host),
    "server_name": _strings(Pseudonyms.host),
    "certificate_names": _strings(Pseudonyms.host),
    "sans_dns": _strings(Pseudonyms.host),
    "sans_ip": _strings(Pseudonyms.host),
    "target": _strings(Pseudonyms.hostport),
    "upstream": _listener_address,
    "address": _listener_address,
    "listen": _listener_address,
    "subject": _strings(Pseudonyms.dn),
    "issuer": _strings(Pseudonyms.dn),
    "certificate_authorities": _strings(Pseudonyms.dn),
    "subject_cn": _strings(Pseudonyms.cn),
    "serial": _strings(lambda p, v: p.opaque(v, "serial")),
    "sha256": _strings(Pseudonyms.fingerprint),
    "sans_other": _strings(Pseudonyms.other_name),
    "source": _strings(lambda p, v: p.opaque(v, "file")),
    "keylog": _strings(lambda p, v: p.opaque(v, "file")),
}
_EXTENSION_VALUES: dict[str, _Handler] = {
    "server_name": _strings(Pseudonyms.host),
    "certificate_authorities": _strings(Pseudonyms.dn),
}


class _Walk:
    def __init__(self, p: Pseudonyms, text: Callable[[str], str]) -> None:
        self.p = p
        self.text = text

    def value(self, value: Any) -> Any:
        if isinstance(value, dict):
            return self.dict(value)
        if isinstance(value, list):
            return [self.value(v) for v in value]
        if isinstance(value, str):
            return self.text(value)
        return value

    def dict(self, d: dict[str, Any]) -> dict[str, Any]:
        cn = d.get("subject_cn")
        if self.p.collecting and isinstance(cn, str) and "sha256" in d and d.get("is_ca") is not True \
                and _looks_like_host(cn):
            self.p.host(cn)  # an end-entity certificate named like a host is a host
        ext_type = d.get("type") if "code" in d and "value" in d else None
        out: dict[str, Any] = {}
        for key, value in d.items():
            if key in _DROP_KEYS:
                continue
            new: Any = _UNHANDLED
            if key == "value" and isinstance(ext_type, str):
                if ext_type in _DROP_EXTENSION_VALUES:
                    continue
                handler = _EXTENSION_VALUES.get(ext_type)
                if handler is not None:
                    new = handler(value, self.p)
            elif key in _FIELDS:
                new = _FIELDS[key](value, self.p)
            out[key] = self.value(value) if new is _UNHANDLED else new
        return out


def redact_document(document: dict[str, Any]) -> dict[str, Any]:
    """A redacted copy of a session document (the input is left alone)."""
    p = Pseudonyms()
    body = {k: v for k, v in document.items() if k not in _FIXED_TOP_KEYS}
    p.collecting = True
    _Walk(p, lambda s: s).value(body)  # every original, and which names are hosts
    p.collecting = False
    _Walk(p, lambda s: s).value(body)  # pseudonyms, in order of first appearance
    redacted = _Walk(p, p.text_replacer()).value(body)
    out = {k: copy.deepcopy(v) for k, v in document.items() if k in _FIXED_TOP_KEYS}
    out.update(redacted)
    # Keep the original key order (readers diff files), then the flag.
    doc = {k: out[k] for k in document if k in out}
    doc["redacted"] = True
    return doc
