"""The negotiation as offer against choice, for the diagnosis and the sinks.

Everything is rendered to IANA names (lists of strings, JSON-ready).  Choices a TLS 1.3 handshake
hides without keys (the certificate, ALPN in EncryptedExtensions) are ``None``; ``offer_summary``
gives a one-line account of the client's offer for sentences like "the client offered ...".
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

from tlsproxy.analysis import chain as chainlib
from tlsproxy.analysis.rules.certificates import expected_host_for
from tlsproxy.analysis.rules.versions import offered_versions
from tlsproxy.wire import extensions as ext
from tlsproxy.wire.extensions import KeyShareEntry
from tlsproxy.wire.registry import (
    cipher_suite_info,
    cipher_suite_name,
    group_name,
    is_grease,
    signature_scheme_key_type,
    signature_scheme_name,
    version_name,
)

if TYPE_CHECKING:
    from tlsproxy.analysis.tracker import Tracker

_MAX_ITEMS = 64  # offers longer than this are cut (with a count) to keep reports readable


def _names(values: object, namer) -> list[str]:  # type: ignore[no-untyped-def]
    if not isinstance(values, tuple):
        return []
    try:
        return list(_names_of(values, namer))
    except TypeError:  # an unhashable item: not from the decoders, but never fail on it
        return [namer(v) for v in values if not (isinstance(v, int) and is_grease(v))][:_MAX_ITEMS]


# The lists below are rendered from what the client offered, which a capture repeats on thousands of
# connections: each is cached by the offered values (tuples of ints) and handed out as a new list.

@lru_cache(maxsize=256)
def _names_of(values: tuple, namer) -> tuple[str, ...]:  # type: ignore[no-untyped-def]
    return tuple(namer(v) for v in values if not (isinstance(v, int) and is_grease(v)))[:_MAX_ITEMS]


@lru_cache(maxsize=256)
def _suites_offered(suites: tuple[int, ...]) -> tuple[tuple[str, ...], int]:
    """(names of the first _MAX_ITEMS non-GREASE suites, how many non-GREASE suites)."""
    real = [s for s in suites if not is_grease(s)]
    return tuple(cipher_suite_name(s) for s in real[:_MAX_ITEMS]), len(real)


@lru_cache(maxsize=256)
def _usable_with(sigs: tuple[int, ...], key_type: str | None) -> tuple[str, ...]:
    return tuple(signature_scheme_name(s) for s in sigs if _key_matches(signature_scheme_key_type(s), key_type))


def _key_matches(scheme_key: str | None, cert_key: str | None) -> bool:
    if scheme_key is None or cert_key is None:
        return False
    if cert_key == "RSA":
        return scheme_key in ("RSA",)
    return scheme_key == cert_key


def _first_values(extensions: tuple[ext.Extension, ...]) -> dict[int, object]:
    """Extension type -> value of its first occurrence (what ``ext_value`` finds), in one pass."""
    values: dict[int, object] = {}
    for e in extensions:
        if e.type not in values:
            values[e.type] = e.value
    return values


def negotiation(t: Tracker) -> dict[str, object]:
    ch, sh = t.client_hello, t.server_hello
    ch_ext = _first_values(ch.extensions) if ch is not None else {}
    version = t.version
    out: dict[str, object] = {}
    versions, explicit = offered_versions(t)
    out["versions"] = {
        "offered": list(map(version_name, versions)),
        "offered_via": "supported_versions" if explicit else "legacy_version",
        "chosen": version_name(version) if version is not None and (sh is not None or t.sslv2) else None,
    }
    suites: tuple[int, ...] = ch.cipher_suites if ch is not None else (
        t.sslv2_hello.tls_cipher_suites if t.sslv2_hello is not None else ())
    offered_suites, offered_count = _suites_offered(suites)
    out["cipher_suites"] = {
        "offered": list(offered_suites),
        "offered_count": offered_count,
        "chosen": cipher_suite_name(t.cipher_suite) if t.cipher_suite is not None else None,
    }
    chosen_group = None
    if sh is not None:
        ks = sh.ext_value(ext.KEY_SHARE)
        if isinstance(ks, KeyShareEntry):
            chosen_group = group_name(ks.group)
    ske = t.server_key_exchange
    if chosen_group is None and ske is not None and ske.named_group is not None:
        chosen_group = group_name(ske.named_group)
    if chosen_group is None and ske is not None and ske.dh_p_bits:
        chosen_group = f"DHE {ske.dh_p_bits}-bit prime"
    shares = ch_ext.get(ext.KEY_SHARE)
    hrr_group = None
    if t.hello_retry is not None:
        g = t.hello_retry.ext_value(ext.KEY_SHARE)
        hrr_group = group_name(g) if isinstance(g, int) else None
    out["groups"] = {
        "offered": _names(ch_ext.get(ext.SUPPORTED_GROUPS), group_name),
        "key_shares": [group_name(s.group) for s in shares if not is_grease(s.group)] if isinstance(shares, tuple) else [],
        "hello_retry_request": hrr_group,
        "chosen": chosen_group,
    }
    sigs = ch_ext.get(ext.SIGNATURE_ALGORITHMS)
    leaf = t.server.certs[0] if t.server.certs else None
    cert_key = None
    if leaf is not None and leaf.key_type:
        cert_key = f"{leaf.key_type} {leaf.key_bits or ''}{' ' + leaf.curve if leaf.curve else ''}".strip()
    usable = None
    if leaf is not None and isinstance(sigs, tuple):
        try:
            usable = list(_usable_with(sigs, leaf.key_type))
        except TypeError:  # an unhashable item: never fail on it
            usable = [signature_scheme_name(s) for s in sigs if _key_matches(signature_scheme_key_type(s),
                                                                             leaf.key_type)]
    out["signature_algorithms"] = {
        "offered": _names(sigs, signature_scheme_name),
        "server_certificate_key": cert_key,
        "offered_usable_with_that_key": usable,
        "chosen": signature_scheme_name(ske.signature_algorithm) if ske is not None and ske.signature_algorithm
        is not None else None,
    }
    alpn = ch_ext.get(ext.ALPN)  # ClientHello.alpn
    out["alpn"] = {"offered": list(alpn) if isinstance(alpn, tuple) else [], "chosen": t.alpn_chosen}
    names = ch_ext.get(ext.SERVER_NAME)  # ClientHello.server_name
    sni = names[0] if isinstance(names, tuple) and names else None
    host, source = expected_host_for(t, sni)
    cert_names = list(leaf.sans_dns[:16] + leaf.sans_ip[:8]) if leaf is not None else None
    match = chainlib.hostname_matches(leaf, host).matches if leaf is not None and host else None
    out["server_name"] = {"sni": sni, "checked": host, "checked_from": source,
                          "certificate_names": cert_names, "matches": match}
    out["resumed"] = t.resumed
    return out


def offer_summary(t: Tracker) -> str:
    """One line: versions, suites (how many, how many TLS 1.3/weak), groups, SNI."""
    from tlsproxy.analysis.rules.ciphers import weakness
    from tlsproxy.analysis.rules.versions import offered_text

    ch = t.client_hello
    parts = [offered_text(t)]
    suites = [s for s in (ch.cipher_suites if ch is not None else
                          t.sslv2_hello.tls_cipher_suites if t.sslv2_hello is not None else ()) if not is_grease(s)]
    infos = [cipher_suite_info(s) for s in suites]
    real = [i for i in infos if i is not None and i.key_exchange != "SCSV"]
    n13 = sum(1 for i in real if i.tls13)
    weak = sum(1 for s in suites if weakness(s))
    if len(suites) <= 4:
        desc = ", ".join(cipher_suite_name(s) for s in suites) or "none"
        parts.append(f"cipher suites {desc}")
    else:
        parts.append(f"{len(real)} cipher suites ({n13} for TLS 1.3{f', {weak} weak' if weak else ''})")
    if ch is not None:
        groups = _names(ch.ext_value(ext.SUPPORTED_GROUPS), group_name)
        if groups:
            parts.append("groups " + ", ".join(groups[:6]) + (" ..." if len(groups) > 6 else ""))
        parts.append(f"SNI {ch.server_name}" if ch.server_name else "no SNI")
    return "; ".join(parts)
