"""Alerts: decoded ones (plaintext or decrypted) and encrypted ones classified by size and position.

An alert's meaning depends on who sent it and when: ``handshake_failure`` straight after the
ClientHello is the server refusing the offer, after an empty client Certificate it is the server
insisting on a certificate.  ``interpret`` turns (alert, sender, step, what came before) into an
outcome, a one-sentence cause and what to check; the diagnosis reuses it.

Encrypted alerts carry no readable description.  TLS <= 1.2 still shows the alert content type;
TLS 1.3 hides it inside application_data records, so an alert is recognised by size: 2 bytes of
alert + 1 byte of inner content type + the AEAD tag (16 bytes for AES-GCM, AES-CCM and
ChaCha20-Poly1305, 8 for AES-CCM-8), i.e. 19 or 11 bytes, or a little more when the sender pads.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

from tlsproxy.analysis.catalog import make_finding
from tlsproxy.analysis.model import Finding
from tlsproxy.wire import events as ev
from tlsproxy.wire.events import Direction
from tlsproxy.wire.registry import (
    alert_description_name,
    alert_meaning,
    cipher_suite_info,
    version_name,
)

if TYPE_CHECKING:
    from tlsproxy.analysis.tracker import Side, Tracker

CLOSE_NOTIFY = 0
USER_CANCELED = 90
NO_CERTIFICATE = 41
_PAD_ALLOWANCE = 32  # bytes of record padding we still read as "an alert, padded"
# The largest TLS 1.3 record tls13_alert_size can match: alert + content type + the longest tag (16) + padding.
MAX_TLS13_ALERT = 2 + 1 + 16 + _PAD_ALLOWANCE

_CERT_ALERTS = {42, 43, 44, 45, 46, 48, 49}

# Enum members and their properties are slow to look up in Python 3.11: plain aliases, as in the tracker.
_C2S, _S2C = Direction.C2S, Direction.S2C
_SENDER = {_C2S: "client", _S2C: "server"}  # Direction.sender


@dataclass(frozen=True, slots=True)
class Interpretation:
    outcome: str
    cause: str
    checks: tuple[str, ...] = ()


@dataclass(slots=True)
class PendingAlert:
    """An encrypted record that may be an alert; classified once we know what follows it."""

    seq: int
    at: float
    length: int
    certain_alert: bool  # TLS <= 1.2: the content type says alert
    during_handshake: bool
    after_app_data: bool
    step: str
    sizes: str  # the sizes that matched, for the finding


@dataclass(slots=True)
class AlertSeen:
    """A decoded alert, or an encrypted abort inferred from record sizes (``inferred``), as the
    diagnosis reads it; the tracker keeps the first few and the first fatal one."""

    direction: Direction
    level: int | None
    description: int | None
    at: float
    seq: int
    step: str
    decrypted: bool = False
    inferred: bool = False  # an encrypted abort inferred from size and position
    during_handshake: bool = True
    sizes: str = ""
    interpretation: Interpretation | None = None


def label(description: int | None) -> str:
    if description is None:
        return "an unreadable alert"
    return f"{alert_description_name(description)}({description})"


# -- decoded alerts ------------------------------------------------------------------------------


def on_alert(t: Tracker, seq: int, a: ev.Alert) -> list[Finding]:
    out: list[Finding] = []
    d = a.direction
    sender = _SENDER[d]
    side = t.side(d)
    how = "decrypted with the key log" if a.decrypted else "plaintext"
    if a.decrypted:
        replaces_guess(t, d)
    elif t.tls13 and t.server_hello is not None:
        out.append(make_finding(
            "ALERT_PLAINTEXT_AFTER_KEYS",
            f"The {sender} sent {label(a.description)} as a plaintext alert record after the ServerHello, although "
            f"handshake keys existed by then: its sender had not switched its own records to them yet (OpenSSL "
            f"does this when it aborts right after the ServerHello, e.g. a client rejecting the server's "
            f"certificate). It is decoded as sent (bytes {a.raw.hex(' ') or 'none'}).",
            direction=d, seq=seq, at=a.at))
    else:
        before = (f"before the {sender}'s change_cipher_spec" if t.server_hello is not None and not t.tls13
                  else "before the ServerHello") + ", when no keys for its records could exist"
        out.append(make_finding(
            "ALERT_NOT_ENCRYPTED_BEFORE_KEYS",
            f"The {sender} sent {label(a.description)} {before}: it is plaintext and decoded as such "
            f"(bytes {a.raw.hex(' ') or 'none'}).",
            direction=d, seq=seq, at=a.at))
    if a.malformed:
        out.append(make_finding(
            "ALERT_MALFORMED",
            f"The {sender}'s alert record holds {len(a.raw)} bytes ({a.raw.hex(' ') or 'empty'}) instead of 2"
            + (f"; what is there reads as {label(a.description)}" if a.description is not None else "") + ".",
            direction=d, seq=seq, at=a.at))
    desc = a.description
    fatal = a.level == 2 or (t.tls13 and desc not in (CLOSE_NOTIFY, USER_CANCELED) and desc is not None)
    if (fatal and t.tls13 and d is _S2C and t.complete and not t.complete_inferred
            and not t.server_went_on and t.client.finished):
        # Both Finished went by, but the server checks the client's flight after sending its own:
        # a fatal alert before anything else from it means it rejected that flight.
        t.undo_complete()
        t.set_step("finished", _C2S, t.client.finished_at if t.client.finished_at is not None else a.at)
    step = t.step_text()
    seen = AlertSeen(direction=d, level=a.level, description=a.description, at=a.at, seq=seq, step=step,
                     decrypted=a.decrypted, during_handshake=not t.complete)
    if len(t.alerts) < t.max_alerts:
        t.alerts.append(seen)
    if desc == CLOSE_NOTIFY:
        side.close_notify = True
        if side.close_notify_seq is None:
            side.close_notify_seq = seq
        out.append(make_finding("ALERT_CLOSE_NOTIFY", f"The {sender} sent close_notify ({how}) {step}.",
                                title=f"close_notify ({'decrypted' if a.decrypted else 'in plaintext'})",
                                direction=d, seq=seq, at=a.at))
        return out
    if desc == NO_CERTIFICATE and d is _C2S and not fatal:
        t.ssl3_no_certificate = True
        out.append(make_finding(
            "SSL3_NO_CERTIFICATE",
            f"The client answered the server's certificate request with the SSL 3.0 warning alert "
            f"no_certificate(41) ({how}): it has no certificate to send.",
            direction=d, seq=seq, at=a.at))
        return out
    if a.malformed and desc is None:
        return out
    meaning = alert_meaning(desc) if desc is not None else ""
    level = {1: "warning", 2: "fatal"}.get(a.level or 0, f"level {a.level}")
    if fatal:
        interp = interpret(t, d, desc, step, seq=seq)
        seen.interpretation = interp
        if t.first_fatal is None:
            t.first_fatal = seen
        out.append(make_finding(
            "ALERT_FATAL",
            f"{meaning} Sent by the {sender} ({how}, {level}) {step}{_version_note(t)}. Likely cause: {interp.cause}",
            title=f"{sender} sent fatal alert {label(desc)}", hints=interp.checks, direction=d, seq=seq, at=a.at))
        if interp.outcome == "version_mismatch":
            out.append(make_finding("VERSION_MISMATCH", interp.cause, hints=interp.checks, direction=d, seq=seq,
                                    at=a.at))
    else:
        out.append(make_finding(
            "ALERT_WARNING", f"{meaning} Sent by the {sender} ({how}, {level}) {step}.",
            title=f"{sender} sent warning alert {label(desc)}", direction=d, seq=seq, at=a.at))
    return out


def replaces_guess(t: Tracker, d: Direction) -> None:
    """A decrypted alert from ``d``: it replaces what was guessed from the sizes of that side's
    encrypted records (they were seen before the key log had their secrets)."""
    t.saw_decrypted()
    side = t.side(d)
    side.decrypted_alert = True
    side.pending = None
    if t.first_fatal is not None and t.first_fatal.inferred and t.first_fatal.direction is d:
        t.first_fatal = None


def keylog_note(t: Tracker) -> str:
    """Why an encrypted record could not be read, and what would show it."""
    if t.decrypt_failures:
        return ("the key log given did not open this connection's records: wrong key log for this connection, "
                "or the traffic was modified")
    if t.options.keylog:
        return "the key log given has no secrets for this connection"
    return "a key log would show which alert it was"


#: How to get a key log from common clients (the diagnosis adds it to inferred TLS 1.3 checks).
KEYLOG_HOWTO = (
    "Get a key log to see exactly what happened: run the client with SSLKEYLOGFILE=/tmp/keys.log (curl, Firefox, "
    "Chrome), `openssl s_client -keylogfile /tmp/keys.log`, or `context.keylog_filename = '/tmp/keys.log'` "
    "(Python ssl), then give tlsproxy --keylog /tmp/keys.log (docs/keylog.md)."
)


def _version_note(t: Tracker) -> str:
    return f", {version_name(t.version)}" if t.version is not None and t.server_hello is not None else ""


# -- encrypted alerts ----------------------------------------------------------------------------


def tls13_alert_size(t: Tracker, length: int) -> str:
    """Which alert sizes ``length`` matches for the negotiated suite ('' when none)."""
    if length > MAX_TLS13_ALERT:
        return ""  # asked for every protected record: most are far larger than any alert
    return _tls13_alert_size(length, t.cipher_suite)


# The two texts below depend only on (length, suite[, version]), and a capture repeats a few of
# those on every connection (every small TLS 1.3 record is asked about): cached, bounded.

@lru_cache(maxsize=512)
def _tls13_alert_size(length: int, cipher_suite: int | None) -> str:
    info = cipher_suite_info(cipher_suite) if cipher_suite is not None else None
    suite = info.name if info is not None else "the negotiated suite"
    tags = (8,) if info is not None and "CCM_8" in info.cipher else (16,) if info is not None else (16, 8)
    for tag in tags:
        exact = 2 + 1 + tag
        if length == exact:
            return f"{length} bytes = 2-byte alert + 1-byte content type + {tag}-byte tag ({suite})"
        if exact < length <= exact + _PAD_ALLOWANCE:
            return (f"{length} bytes: an alert is {exact} bytes with {suite}; up to {_PAD_ALLOWANCE} bytes "
                    f"more is read as record padding")
    return ""


def tls12_alert_size(t: Tracker, length: int) -> str:
    """What a single encrypted alert weighs with the negotiated TLS <= 1.2 suite, for the finding."""
    return _tls12_alert_size(length, t.cipher_suite, t.version)


@lru_cache(maxsize=512)
def _tls12_alert_size(length: int, cipher_suite: int | None, version: int | None) -> str:
    info = cipher_suite_info(cipher_suite) if cipher_suite is not None else None
    if info is None:
        return f"{length} bytes"
    mac = {"MD5": 16, "SHA": 20, "SHA256": 32, "SHA384": 48}.get(info.mac)
    expected: int | None = None
    if info.aead:
        if "CHACHA20" in info.cipher:
            expected = 2 + 16
        else:
            expected = 8 + 2 + (8 if "CCM_8" in info.cipher else 16)
    elif info.cbc and mac is not None:
        block = 16 if ("AES" in info.cipher or "CAMELLIA" in info.cipher or "SEED" in info.cipher
                       or "ARIA" in info.cipher) else 8
        body = -(-(2 + mac + 1) // block) * block
        iv = block if version is not None and version >= 0x0302 else 0
        expected = iv + body
    elif mac is not None:
        expected = 2 + mac
    if expected is None:
        return f"{length} bytes"
    if expected == length:
        return f"{length} bytes, the size of one alert with {info.name}"
    return f"{length} bytes (one alert with {info.name} would be {expected})"


def candidate(t: Tracker, seq: int, rec: ev.Record, side: Side, *, certain_alert: bool) -> PendingAlert:
    sizes = tls12_alert_size(t, rec.length) if certain_alert else tls13_alert_size(t, rec.length)
    return PendingAlert(seq=seq, at=rec.at, length=rec.length, certain_alert=certain_alert,
                        during_handshake=not t.complete, after_app_data=side.app_records > 0 or t.complete,
                        step=t.step_text(), sizes=sizes)


def resolve_pending(t: Tracker, side: Side, *, closing: bool) -> list[Finding]:
    """Classify ``side``'s pending encrypted alert now that we know whether anything followed it:
    ``closing`` means the side's stream (or the connection) ended right after it."""
    p = side.pending
    if p is None:
        return []
    side.pending = None
    d = side.direction
    sender = _SENDER[d]
    if not closing:
        if p.certain_alert:
            return [make_finding(
                "ALERT_ENCRYPTED",
                f"The {sender} sent an encrypted alert ({p.sizes}) {p.step} and kept going: probably a warning "
                f"such as no_renegotiation; a key log would show which.",
                direction=d, seq=p.seq, at=p.at)]
        return []  # a small TLS 1.3 record that was not the last word: just data
    if not p.during_handshake:
        side.close_notify = True
        if side.close_notify_seq is None:
            side.close_notify_seq = p.seq
        kind = "encrypted alert" if p.certain_alert else "encrypted record of alert size"
        return [make_finding(
            "ALERT_ENCRYPTED_CLOSE",
            f"The {sender}'s last record before its close was an {kind} ({p.sizes}) after "
            f"{'application data' if p.after_app_data else 'its handshake'}: "
            f"almost surely close_notify, a clean close.",
            direction=d, seq=p.seq, at=p.at)]
    # During the handshake, followed by a close: a failure, inferred.
    if t.complete and t.tls13 and d is _S2C:
        t.undo_complete()  # the decrypted Finished messages, then the server's rejection
        t.set_step("finished", _C2S, t.client.finished_at if t.client.finished_at is not None else p.at)
    seen = AlertSeen(direction=d, level=None, description=None, at=p.at, seq=p.seq,
                                       step=p.step, inferred=True, during_handshake=True, sizes=p.sizes)
    interp = interpret_encrypted(t, d, p)
    seen.interpretation = interp
    if t.first_fatal is None:
        t.first_fatal = seen
    if len(t.alerts) < t.max_alerts:
        t.alerts.append(seen)
    what = "an encrypted alert" if p.certain_alert else "an encrypted record of alert size"
    keylog = keylog_note(t)
    return [make_finding(
        "ALERT_ENCRYPTED_HANDSHAKE",
        f"The {sender} sent {what} ({p.sizes}) {p.step} and then the connection closed: the handshake failed "
        f"(inferred from size and position; {keylog}). {interp.cause}",
        title=f"{sender} aborted the handshake with an encrypted alert", hints=interp.checks,
        direction=d, seq=p.seq, at=p.at)]


def interpret_encrypted(t: Tracker, d: Direction, p: PendingAlert) -> Interpretation:
    """What an encrypted handshake abort most likely means, from who sent it and when."""
    if t.tls13 and d is _S2C and t.client_flight_at is not None:
        cmsg = t.client.certificate_msg
        if t.cert_request is not None and cmsg is not None:  # the client's flight was decrypted
            if cmsg.is_empty:
                return Interpretation(
                    "client_cert_missing",
                    "The server asked for a client certificate, the client answered with an empty Certificate "
                    "(decrypted), and the server then aborted with an alert that could not be read: almost surely "
                    "certificate_required (116).", _CLIENT_CERT_MISSING_CHECKS)
            reasons = "; ".join(dict.fromkeys(t.client_chain_problems))
            return Interpretation(
                "client_cert_rejected",
                "The client sent its certificate (decrypted) and the server aborted right after with an alert "
                f"that could not be read: it rejected the certificate.{' What we see: ' + reasons + '.' if reasons else ''}",
                ("Check that the client certificate is issued by a CA the server trusts for client authentication.",
                 "Check its validity dates and extended key usage (clientAuth)."))
        first = t.client.first_protected_len
        empty_cert = first is not None and first in (25, 17)
        if empty_cert:
            return Interpretation(
                "client_cert_missing",
                "The server aborted after the client's Certificate/Finished; the client's first encrypted "
                f"record was {first} bytes, the size of an empty Certificate message, so it most likely had no "
                "certificate to send and the server answered certificate_required (116) — inferred; a key log "
                "would show which.",
                _CLIENT_CERT_MISSING_CHECKS)
        return Interpretation(
            "client_auth_failed",
            "The server aborted after the client's Certificate/Finished; most often certificate_required (116) or "
            "a rejected client certificate — inferred; a key log would show which.",
            ("Check whether the server requires a client certificate (mutual TLS) and its logs for the reason.",
             *_CLIENT_CERT_MISSING_CHECKS[1:], "Check that the client certificate chains to a CA the server trusts."))
    if t.tls13 and d is _C2S:
        return Interpretation(
            "server_cert_rejected",
            "The client aborted right after the server's encrypted flight (its Certificate is in there): most "
            "often it rejected the server's certificate (unknown_ca, bad_certificate, certificate_expired, a "
            "name mismatch) — inferred; a key log would show which.",
            ("Check the client's error message or log: it names the certificate problem.",
             "Check that the client trusts the CA that issued the server certificate (missing intermediate?).",
             "Check that the certificate covers the name the client used and has not expired."))
    if d is _S2C and t.client.ccs and not t.server.ccs:
        return Interpretation("alert", "The server aborted after the client's Finished; a Finished or "
                              "CertificateVerify that did not verify is the usual reason.")
    return Interpretation("alert", f"The {_SENDER[d]} gave up {p.step}; the alert is encrypted.")


# -- interpretation of decoded alerts ------------------------------------------------------------

_CLIENT_CERT_MISSING_CHECKS = (
    "Check that the client is configured with a certificate and private key at all.",
    "Check that the certificate is issued under one of the CAs the server names in its request (browsers, "
    "Windows and Java silently withhold certificates that do not chain to one of them).",
    "Check that the certificate has not expired and the client can read the private key.",
)


def reaction_to_hang_up(t: Tracker, d: Direction, desc: int | None, seq: int | None) -> Interpretation | None:
    """An alert sent after the peer had already closed its direction mid-handshake (``Tracker.hang_up``)
    answers that close: the peer gave up first, the alert is only the reaction to it."""
    h = t.hang_up
    if h is None or seq is None or h.seq > seq or h.side == _SENDER[d]:
        return None
    empty = h.sent_nothing and h.side == "client"
    what = "an empty connection" if empty else f"the {h.side}'s hang-up"
    owed = f", while it still owed {h.owed}" if h.turn == h.side and h.owed else ""
    closed = ("had closed the connection without sending a byte" if empty
              else f"had already closed its side of the connection (FIN) {h.step}{owed}")
    return Interpretation(
        "alert",
        f"The {_SENDER[d]} answered {what} with {label(desc)}: the {h.side} {closed}; the alert is the "
        f"{_SENDER[d]}'s reaction, not the cause.",
        (f"Look at the {h.side}: it closed first; its log or error message says why.",))


def interpret(t: Tracker, d: Direction, desc: int | None, step: str, *, seq: int | None = None) -> Interpretation:
    """What a decoded fatal alert means; ``seq`` (its event) lets an alert that answers the peer's
    earlier hang-up read as the reaction it is."""
    reaction = reaction_to_hang_up(t, d, desc, seq)
    if reaction is not None:
        return reaction
    sender = _SENDER[d]
    by_server = d is _S2C
    no_sh = t.server_hello is None and not t.sslv2
    ccert = t.client.certificate_msg
    client_sent_cert = ccert is not None and not ccert.is_empty
    client_withheld = t.cert_request is not None and not client_sent_cert and (
        ccert is not None or t.ssl3_no_certificate or "client_key_exchange" in step or "change_cipher_spec" in step
        or "finished" in step)
    server_chain = t.server.certs is not None
    problems = t.server_chain_problems
    if desc == 70:
        from tlsproxy.analysis.rules.versions import mismatch_explanation

        cause, checks = mismatch_explanation(t, d)
        return Interpretation("version_mismatch", cause, checks)
    if desc == 86:
        return Interpretation("alert", "The client retried with a lower version and TLS_FALLBACK_SCSV although the "
                              "server supports a higher one: an earlier attempt failed (often a middlebox) and "
                              "the server refuses the downgrade.",
                              ("Find why the client's first, higher-version attempt failed.",))
    if desc == 116:
        return Interpretation("client_cert_missing", "The server requires a client certificate and the client "
                              "sent none.", _CLIENT_CERT_MISSING_CHECKS)
    if by_server and desc in (40, 71) and no_sh:
        from tlsproxy.analysis.negotiation import offer_summary

        return Interpretation(
            "no_shared_parameters",
            f"The server found nothing acceptable in the ClientHello: no cipher suite, group or signature "
            f"algorithm in common, or no certificate for the requested name. The client offered {offer_summary(t)}.",
            ("Compare the client's offer with the server's configured cipher suites, groups and versions.",
             "Check that the server has a certificate whose key type the client's signature algorithms allow.",
             "If the server hosts several names, check that it knows the SNI name the client sent."))
    if by_server and client_withheld and desc in (40, 42, 46, 49, 10, 50):
        return Interpretation(
            "client_cert_missing",
            f"The server asked for a client certificate and the client sent none, so the server gave up with "
            f"{label(desc)}.", _CLIENT_CERT_MISSING_CHECKS)
    if by_server and client_sent_cert and (desc in _CERT_ALERTS or desc in (40, 51)):
        from tlsproxy.analysis.rules.clientauth import rejection_reasons

        reasons = rejection_reasons(t)
        why = f" What we see: {'; '.join(reasons)}." if reasons else ""
        extra = (" A decrypt_error here usually means the client's CertificateVerify did not verify: its private "
                 "key does not match the certificate." if desc == 51 else "")
        return Interpretation(
            "client_cert_rejected",
            f"The server rejected the client's certificate with {label(desc)}.{extra}{why}",
            ("Check that the client certificate is issued by a CA the server trusts for client authentication.",
             "Check its validity dates and extended key usage (clientAuth).",
             "Check that the client's private key matches the certificate."))
    hidden_chain = t.tls13 and t.server_hello is not None and not server_chain
    if not by_server and desc in _CERT_ALERTS and (server_chain or hidden_chain):
        if hidden_chain:
            why = (" TLS 1.3 encrypts the server's Certificate, so its problems cannot be listed without a key "
                   "log; check the certificate's dates, names and issuer.")
        elif problems:
            why = f" What we see in the server's chain: {'; '.join(problems)}."
        else:
            why = (" Nothing in the chain looks wrong from here: the client probably does not trust the issuing "
                   "CA (private CA not in its trust store).")
        return Interpretation(
            "server_cert_rejected",
            f"The client rejected the server's certificate chain with {label(desc)}.{why}",
            ("Check that the server sends its full chain (leaf and intermediates).",
             "Check that the client trusts the root CA.",
             "Check the certificate's names against the host name the client uses, and its dates."))
    if desc == 112:
        sni = t.client_hello.server_name if t.client_hello is not None else None
        return Interpretation("alert", f"The server has no certificate or virtual host for the SNI name "
                              f"{sni!r}." if sni else "The server does not recognise the requested name.",
                              ("Check the host name the client uses against the names the server is configured "
                               "for.",))
    if desc == 120:
        offered = ", ".join(t.client_hello.alpn) if t.client_hello is not None else ""
        return Interpretation("no_shared_parameters", f"The server supports none of the application protocols "
                              f"the client offered in ALPN ({offered or 'none'}).",
                              ("Enable one of the offered protocols on the server, or change the client's.",))
    if desc == 40 and not by_server and t.server_hello is not None:
        return Interpretation("no_shared_parameters", "The client refused what the server chose (cipher suite, "
                              "group, signature algorithm or an extension it did not offer).",
                              ("Compare the ServerHello's choices with the client's offer.",))
    if desc in (40, 71):
        return Interpretation("no_shared_parameters", f"The {sender} found no acceptable parameters {step}.",
                              ("Compare both sides' cipher suites, groups and signature algorithms.",))
    if desc == 20:
        return Interpretation("alert", "A record failed its integrity check: the keys differ (a bug), or "
                              "something between the peers altered the bytes.",
                              ("Look for a middlebox or broken network equipment rewriting the traffic.",))
    if desc == 51:
        return Interpretation("alert", f"The {sender} could not verify a signature or a Finished message {step}.")
    if desc == 47 and t.server_hello is not None and t.server_hello.downgrade_sentinel and not by_server:
        return Interpretation("alert", "The client saw the TLS 1.3 downgrade sentinel in the server's random and "
                              "aborted: something removed TLS 1.3 from its offer.")
    return Interpretation("alert", f"The {sender} sent {label(desc)} {step}: {alert_meaning(desc) if desc is not None else ''}".rstrip())
