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
    versions, explicit = offered_versions(t)
    version = t.version
    suites: tuple[int, ...] = ch.cipher_suites if ch is not None else (
        t.sslv2_hello.tls_cipher_suites if t.sslv2_hello is not None else ())
    ks = sh.ext_value(ext.KEY_SHARE) if sh is not None else None
    ske = t.server_key_exchange
    shares = ch_ext.get(ext.KEY_SHARE)
    hrr_share = t.hello_retry.ext_value(ext.KEY_SHARE) if t.hello_retry is not None else None
    leaf = t.server.certs[0] if t.server.certs else None
    names = ch_ext.get(ext.SERVER_NAME)  # ClientHello.server_name
    sni = names[0] if isinstance(names, tuple) and names else None
    host, source = expected_host_for(t, sni)
    # Everything the answer depends on, as plain values: a capture repeats the same offer, choice
    # and certificate on thousands of connections, so the answer is cached by them (see _render).
    key = (
        versions, explicit, version if version is not None and (sh is not None or t.sslv2) else None,
        suites, t.cipher_suite, ks.group if isinstance(ks, KeyShareEntry) else None,
        None if ske is None else (ske.named_group, ske.dh_p_bits, ske.signature_algorithm),
        ch_ext.get(ext.SUPPORTED_GROUPS),
        tuple(s.group for s in shares) if isinstance(shares, tuple) else None,
        hrr_share if isinstance(hrr_share, int) else None,
        ch_ext.get(ext.SIGNATURE_ALGORITHMS),
        None if leaf is None else (leaf.key_type, leaf.key_bits, leaf.curve, leaf.sans_dns, leaf.sans_ip,
                                   leaf.sans_other, leaf.subject_cn),
        ch_ext.get(ext.ALPN), t.alpn_chosen, sni, host, source, t.resumed,
    )
    try:
        frozen = _render(key)
    except TypeError:  # an unhashable item: not from the decoders, but never fail on it
        frozen = _render.__wrapped__(key)
    # A fresh dict (of fresh dicts and lists) each time, as the uncached rendering gave.
    return {name: ({k: list(v) if type(v) is tuple else v for k, v in part} if type(part) is tuple else part)
            for name, part in frozen}


_Frozen = tuple[tuple[str, object], ...]  # the negotiation with dicts as item tuples and lists as tuples


@lru_cache(maxsize=256)
def _render(key: tuple) -> _Frozen:  # type: ignore[type-arg]
    """The negotiation for ``key`` (see ``negotiation``), frozen: JSON-ready names, dicts as item
    tuples and lists as tuples (no other value in it is a tuple)."""
    (versions, explicit, chosen_version, suites, cipher_suite, sh_group, ske, groups, share_groups, hrr_group,
     sigs, leaf, alpn, alpn_chosen, sni, host, source, resumed) = key
    out: dict[str, object] = {}
    out["versions"] = {
        "offered": tuple(map(version_name, versions)),
        "offered_via": "supported_versions" if explicit else "legacy_version",
        "chosen": version_name(chosen_version) if chosen_version is not None else None,
    }
    offered_suites, offered_count = _suites_offered(suites)
    out["cipher_suites"] = {
        "offered": offered_suites,
        "offered_count": offered_count,
        "chosen": cipher_suite_name(cipher_suite) if cipher_suite is not None else None,
    }
    ske_group, ske_bits, ske_sig = ske if ske is not None else (None, None, None)
    chosen_group = group_name(sh_group) if sh_group is not None else None
    if chosen_group is None and ske_group is not None:
        chosen_group = group_name(ske_group)
    if chosen_group is None and ske_bits:
        chosen_group = f"DHE {ske_bits}-bit prime"
    out["groups"] = {
        "offered": tuple(_names(groups, group_name)),
        "key_shares": tuple(group_name(g) for g in share_groups if not is_grease(g)) if share_groups is not None
        else (),
        "hello_retry_request": group_name(hrr_group) if hrr_group is not None else None,
        "chosen": chosen_group,
    }
    cert_key = usable = None
    if leaf is not None:
        key_type, key_bits, curve, sans_dns, sans_ip, sans_other, subject_cn = leaf
        if key_type:
            cert_key = f"{key_type} {key_bits or ''}{' ' + curve if curve else ''}".strip()
        if isinstance(sigs, tuple):
            try:
                usable = _usable_with(sigs, key_type)
            except TypeError:  # an unhashable item: never fail on it
                usable = tuple(signature_scheme_name(s) for s in sigs
                               if _key_matches(signature_scheme_key_type(s), key_type))
    out["signature_algorithms"] = {
        "offered": tuple(_names(sigs, signature_scheme_name)),
        "server_certificate_key": cert_key,
        "offered_usable_with_that_key": usable,
        "chosen": signature_scheme_name(ske_sig) if ske_sig is not None else None,
    }
    out["alpn"] = {"offered": tuple(alpn) if isinstance(alpn, tuple) else (), "chosen": alpn_chosen}
    cert_names = match = None
    if leaf is not None:
        cert_names = sans_dns[:16] + sans_ip[:8]
        if host:
            match = chainlib.hostname_matches_names(host, sans_ip, sans_dns, sans_other, subject_cn).matches
    out["server_name"] = {"sni": sni, "checked": host, "checked_from": source,
                          "certificate_names": cert_names, "matches": match}
    return (*((name, tuple(part.items())) for name, part in out.items()), ("resumed", resumed))


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
