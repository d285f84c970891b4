"""Make a session document safe to carry out of a closed network.

Host names, IP addresses, certificate subjects, issuers, serials and fingerprints are replaced by
pseudonyms that stay consistent across the whole document (the same issuer is the same
``CN=issuer-2`` wherever it appears, in a certificate, a CertificateRequest's CA list or a
finding's text), so the story of a failure survives while the names do not.  Raw bytes (record
payloads, randoms, session ids) are dropped, so a redacted file can be read and shown again but
not re-analysed.  Findings and diagnoses are kept, with the same substitutions applied to their
text.
"""

from __future__ import annotations

import copy
import ipaddress
import re
from typing import Any

__all__ = ["Pseudonyms", "redact_document"]

# Keys whose values are raw bytes (or identify them); dropped outright.
_DROP_KEYS = frozenset({"payload", "ciphertext", "random", "session_id", "challenge", "first_line", "first_bytes"})


class Pseudonyms:
    """Consistent replacements, handed out in order of first appearance."""

    def __init__(self) -> None:
        self.map: dict[str, str] = {}
        self._counts: dict[str, int] = {}

    def _next(self, kind: str) -> int:
        self._counts[kind] = self._counts.get(kind, 0) + 1
        return self._counts[kind]

    def host(self, name: str) -> str:
        if not name:
            return name
        if name not in self.map:
            try:
                ip = ipaddress.ip_address(name.strip("[]"))
            except ValueError:
                self.map[name] = f"host-{self._next('host')}.example"
            else:
                n = self._next("ip")
                self.map[name] = f"2001:db8::{n:x}" if ip.version == 6 else f"192.0.2.{n % 254 + 1}" \
                    if n < 254 else f"198.51.100.{(n - 254) % 254 + 1}"
        return self.map[name]

    def dn(self, name: str) -> str:
        if not name:
            return name
        if name not in self.map:
            self.map[name] = f"CN=name-{self._next('dn')}"
        return self.map[name]

    def opaque(self, value: str, kind: str) -> str:
        if not value:
            return value
        if value not in self.map:
            self.map[value] = f"{kind}-{self._next(kind)}"
        return self.map[value]

    def hostport(self, text: str) -> str:
        host, sep, port = text.rpartition(":")
        if sep and port.isdigit() and host:
            return f"{self.host(host)}:{port}"
        return self.host(text)


def redact_document(document: dict[str, Any]) -> dict[str, Any]:
    """A redacted deep copy of a session document (the input is left alone)."""
    doc = copy.deepcopy(document)
    p = Pseudonyms()
    for key in ("source", "keylog"):
        if doc.get(key):
            doc[key] = p.opaque(str(doc[key]), "file")
    for listener in doc.get("listeners", []):
        _redact_listener(listener, p)
    for conn in doc.get("connections", []):
        for side in ("client", "server"):
            addr = conn.get(side)
            if isinstance(addr, dict) and addr.get("host"):
                addr["host"] = p.host(addr["host"])
        if conn.get("target"):
            conn["target"] = p.hostport(conn["target"])
        summary = conn.get("summary")
        if isinstance(summary, dict) and summary.get("sni"):
            summary["sni"] = p.host(summary["sni"])
        for cert in conn.get("certificates", []):
            _redact_cert(cert, p)
        for event in conn.get("events", []):
            _redact_event(event, p)
    # Second pass: the same values wherever they occur in free text (titles, details, causes).
    doc = _replace_strings(_drop(doc), p.map)
    doc["redacted"] = True
    return doc


def _redact_listener(listener: dict[str, Any], p: Pseudonyms) -> None:
    for key, value in list(listener.items()):
        if key in ("host", "upstream_host") and isinstance(value, str):
            listener[key] = p.host(value)
        elif key in ("upstream", "address", "listen") and isinstance(value, str):
            listener[key] = p.hostport(value)
        elif key in ("upstream", "address") and isinstance(value, list) and value and isinstance(value[0], str):
            listener[key] = [p.host(value[0]), *value[1:]]


def _redact_cert(cert: dict[str, Any], p: Pseudonyms) -> None:
    for key in ("subject", "issuer"):
        if cert.get(key):
            cert[key] = p.dn(cert[key])
    if cert.get("subject_cn"):
        cert["subject_cn"] = p.host(cert["subject_cn"])
    if cert.get("serial"):
        cert["serial"] = p.opaque(cert["serial"], "serial")
    if cert.get("sha256"):
        cert["sha256"] = p.opaque(cert["sha256"], "certificate")
    for key in ("sans_dns", "sans_ip"):
        cert[key] = [p.host(v) for v in cert.get(key, [])]
    if cert.get("sans_other"):
        cert["sans_other"] = [p.opaque(v, "san") for v in cert["sans_other"]]


def _redact_event(event: dict[str, Any], p: Pseudonyms) -> None:
    fields = event.get("fields")
    if not isinstance(fields, dict):
        return
    if fields.get("server_name"):
        fields["server_name"] = p.host(fields["server_name"])
    for entry in fields.get("entries", []) or []:
        _redact_cert(entry, p)
    if isinstance(fields.get("certificate_authorities"), list):
        fields["certificate_authorities"] = [p.dn(n) for n in fields["certificate_authorities"]]
    for holder in [fields, *(e for e in fields.get("entries", []) or [] if isinstance(e, dict))]:
        for ext in holder.get("extensions", []) or []:
            if ext.get("type") == "server_name" and isinstance(ext.get("value"), list):
                ext["value"] = [p.host(v) for v in ext["value"]]
            elif ext.get("type") == "certificate_authorities" and isinstance(ext.get("value"), list):
                ext["value"] = [p.dn(v) for v in ext["value"]]


def _drop(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop(v) for k, v in value.items() if k not in _DROP_KEYS}
    if isinstance(value, list):
        return [_drop(v) for v in value]
    return value


def _replace_strings(value: Any, mapping: dict[str, str]) -> Any:
    # Longest first, so "CN=a.example,O=X" is replaced whole before "a.example" inside it.  Very short
    # values (a one-letter host) are left to the structured pass: replacing them in prose garbles it.
    keys = sorted((k for k in mapping if len(k) >= 3), key=len, reverse=True)
    if not keys:
        return value
    pattern = re.compile("|".join(re.escape(k) for k in keys))

    def walk(v: Any) -> Any:
        if isinstance(v, str):
            return pattern.sub(lambda m: mapping[m.group(0)], v) if v not in mapping.values() else v
        if isinstance(v, dict):
            return {k: walk(x) for k, x in v.items()}
        if isinstance(v, list):
            return [walk(x) for x in v]
        return v

    return walk(value)
