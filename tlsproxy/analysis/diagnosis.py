"""One diagnosis per connection: an outcome scripts can match on, who gave up at which step, the
most likely cause in one sentence and an ordered list of what to check.

Outcomes (``model.OUTCOMES``), decided in this order — the first that applies wins:

1. ``not_tls`` — either side's bytes were not TLS (and no handshake completed).
2. ``upstream_unreachable`` — the proxy could not connect to the server.
3. ``established`` — the handshake completed (``certain=False`` when TLS 1.3 completion was
   inferred without keys).
4. The first fatal alert, read with who sent it and when (``rules.alerts.interpret``):
   ``version_mismatch``, ``no_shared_parameters``, ``client_cert_missing``,
   ``client_cert_rejected``, ``server_cert_rejected``, or ``alert``.  An encrypted abort inferred
   from record sizes gives the same outcomes (or ``client_auth_failed`` when a TLS 1.3 server
   aborted after the client's flight and we cannot tell a missing certificate from a rejected one)
   with ``certain=False``.
5. No alert, the connection ended during the handshake: ``reset_by_client`` / ``reset_by_server``,
   ``closed_by_client`` / ``closed_by_server`` (with the step and what the other side owed; a
   server that closes after the client withheld a requested certificate gives
   ``client_cert_missing``, inferred), ``no_server_hello`` when the client gave up waiting (or an
   idle timeout hit) before any ServerHello.
6. ``incomplete`` — still open, the capture stops, or the proxy shut down.

The diagnosis says "unclear" rather than guess: inferred outcomes are marked, and the cause then
names the evidence.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tlsproxy.analysis.model import ConnectionSummary, Diagnosis, Severity
from tlsproxy.analysis.negotiation import negotiation, offer_summary
from tlsproxy.analysis.rules.alerts import KEYLOG_HOWTO, Interpretation, interpret
from tlsproxy.analysis.rules.closes import closer
from tlsproxy.analysis.rules.stalls import waiting
from tlsproxy.wire.registry import cipher_suite_name, version_name

if TYPE_CHECKING:
    from tlsproxy.analysis.tracker import Tracker

_CLIENT_CERT_CHECKS = (
    "Check that the client is configured with a certificate and private key.",
    "Check that the certificate is issued under one of the CAs the server names in its request.",
    "Check that it has not expired (and the clocks are right) and that the client can read the private key.",
)


def diagnose(t: Tracker) -> Diagnosis:
    outcome, certain, gave_up, step, cause, checks = _decide(t)
    if not certain and _hidden_by_encryption(t):
        checks = (*checks, KEYLOG_HOWTO if not t.options.keylog else
                  "Check that the key log is the one this client wrote during this connection (its client random "
                  "must be in it).")
    return Diagnosis(outcome=outcome, certain=certain, gave_up=gave_up, step=step, cause=cause,
                     checks=tuple(dict.fromkeys(checks)), negotiation=negotiation(t), timings=timings(t))


def _decide(t: Tracker) -> tuple[str, bool, str | None, str | None, str, tuple[str, ...]]:
    not_tls = t.client.not_tls or t.server.not_tls
    if not_tls is not None and not t.complete:
        from tlsproxy.analysis.rules.nottls import describe

        side = not_tls.direction.sender
        if side == "client":
            cause = f"The client did not speak TLS: its first bytes are {describe(not_tls)}."
            checks = ("Make the client use TLS (https://, its TLS option) on this port, or use the plaintext port.",)
        else:
            cause = f"The server answered in plain text, not TLS: {describe(not_tls)}."
            checks = ("Point the client at the service's TLS port, or enable TLS on this one.",
                      "If the banner is SMTP/IMAP/POP3/FTP/XMPP, the service expects STARTTLS first.")
        return "not_tls", True, side, t.step_text(), cause, checks
    if t.end_how in ("upstream_failed", "refused"):
        return ("upstream_unreachable", True, "proxy", "before the ClientHello reached the server",
                f"The proxy could not connect to the server{': ' + t.end_reason if t.end_reason else ''}.",
                ("Check the upstream host and port, DNS, and that the server is listening.",))
    if t.complete:
        return _established(t)
    fatal = t.first_fatal
    if fatal is not None:
        interp = fatal.interpretation
        if t.decrypted and not fatal.inferred:
            # Records decrypted after the alert was read (their secrets came later) may have shown
            # what explains it (the server's chain in TLS 1.3): read it again with everything known.
            interp = interpret(t, fatal.direction, fatal.description, fatal.step)
        if not isinstance(interp, Interpretation):
            interp = Interpretation("alert", "A fatal alert ended the handshake.")
        return (interp.outcome, not fatal.inferred, fatal.direction.sender, fatal.step, interp.cause,
                interp.checks + _chain_checks(t, interp.outcome))
    return _no_alert(t)


def _established(t: Tracker) -> tuple[str, bool, str | None, str | None, str, tuple[str, ...]]:
    what = []
    if t.version is not None:
        what.append(version_name(t.version))
    if t.cipher_suite is not None:
        what.append(cipher_suite_name(t.cipher_suite))
    if t.resumed:
        what.append("resumed")
    how = " (inferred from the encrypted records: no key log)" if t.complete_inferred else ""
    cause = f"The handshake completed{how}: {', '.join(what) or 'parameters not seen'}."
    errors = [f for f in t.findings if f.severity is Severity.error]
    warnings = [f for f in t.findings if f.severity is Severity.warning]
    checks: tuple[str, ...] = ()
    if errors or warnings:
        worst = (errors or warnings)[0]
        cause += (f" It works, but {len(errors)} error(s) and {len(warnings)} warning(s) were flagged, "
                  f"first: {worst.title}.")
        checks = tuple(f"{f.title}: {f.hints[0]}" if f.hints else f.title for f in (errors + warnings)[:5])
    fatal = t.first_fatal
    if fatal is not None and not fatal.during_handshake:
        cause += f" Later the {fatal.direction.sender} ended it with a fatal alert."
    return "established", not t.complete_inferred, None, "complete", cause, checks


def _no_alert(t: Tracker) -> tuple[str, bool, str | None, str | None, str, tuple[str, ...]]:
    how = t.end_how
    step = t.step_text()
    turn, owed = waiting(t)
    owed_text = f" The {turn} still owed {owed}." if turn else ""
    if how is None or how in ("capture_end", "shutdown", "error"):
        why = {None: "The connection is still open", "capture_end": "The capture ends",
               "shutdown": "The proxy shut down", "error": "The connection failed"}[how]
        return ("incomplete", True, None, step, f"{why} {step}, before the handshake completed.{owed_text}",
                ("Capture or watch longer to see how it ends.",) if how != "error" else ())
    who = closer(t, how, t.end_by)
    if t.client_hello is None and t.sslv2_hello is None:
        if how == "reset" and who:
            return (f"reset_by_{who}", True, who, step, f"The {who} reset the connection before any ClientHello.",
                    ())
        gone = who or "client"
        return (f"closed_by_{gone}" if gone in ("client", "server") else "incomplete", True, who, step,
                f"The connection closed before the client sent a ClientHello (a port check, health probe or a client "
                f"that gave up).", ("If a real client did this, check that it is configured for TLS on this port.",))
    if how == "idle_timeout":
        outcome = "no_server_hello" if t.server_hello is None and not t.sslv2 else "incomplete"
        return (outcome, True, turn, step, f"The handshake stopped {step} and the connection timed out.{owed_text}",
                (f"Look at the {turn}: it never sent {owed}." if turn else "Look at both sides' logs.",
                 "Check for a firewall dropping packets in one direction."))
    if who not in ("client", "server"):
        return ("incomplete", False, None, step, f"The connection ended ({how}) {step}; who ended it is unknown."
                f"{owed_text}", ())
    verb = "reset" if how == "reset" else "closed"
    outcome = f"{'reset' if how == 'reset' else 'closed'}_by_{who}"
    if t.server_hello is None and not t.sslv2 and 2 in t.server.messages:
        return (outcome, False, who, step, f"The server answered with a ServerHello this tool could not decode "
                f"(see the decode error), then the {who} {verb} the connection; unclear why.",
                ("Look at the decode error finding: a pre-standard or broken ServerHello.",))
    if t.server_hello is None and not t.sslv2:
        if who == "client":
            return ("no_server_hello", True, "client", step,
                    f"The client {verb} the connection without getting a ServerHello: the server never answered "
                    f"the ClientHello.", ("Check that the server is up and speaks TLS on this port.",
                                          "Check for a firewall or proxy swallowing the ClientHello."))
        from tlsproxy.analysis.rules.versions import client_max

        top = client_max(t)
        if top is not None and top < 0x0303 and not (top >> 8 == 0x7F):
            return ("version_mismatch", False, "server", step,
                    f"The server {verb} the connection right after a ClientHello offering at most "
                    f"{version_name(top)}: it most likely refuses versions below TLS 1.2 (inferred; it sent no "
                    f"alert).", ("Enable TLS 1.2 or 1.3 in the client.",))
        cause = (f"The server {verb} the connection right after the ClientHello without an alert: it refused the "
                 f"offer silently (no shared version, cipher suite, group or signature algorithm, or an unknown SNI "
                 f"name), or something in front of it dropped the connection. The client offered {offer_summary(t)}.")
        checks = ("Check the server's log for the reason it dropped the handshake.",
                  "Compare the client's offer with the server's versions and cipher suites.",
                  "If a firewall or IPS sits in front of the server, check whether it resets on this SNI.")
        return outcome, True, "server", step, cause, checks
    # After the ServerHello, no alert.
    cr = t.cert_request
    cmsg = t.client.certificate_msg
    withheld = cr is not None and (t.ssl3_no_certificate or (cmsg is not None and cmsg.is_empty)
                                   or (cmsg is None and t.client.ccs))
    if who == "server" and withheld:
        return ("client_cert_missing", False, "server", step,
                "The server asked for a client certificate, the client sent none, and the server then "
                f"{verb} the connection without an alert (inferred).", _CLIENT_CERT_CHECKS)
    if who == "client" and turn == "client" and t.server.certs is not None:
        problems = t.server_chain_problems
        seen = ("; ".join(problems) if problems else "nothing wrong visible in the chain from here")
        return (outcome, True, "client", step,
                f"The client {verb} the connection {step} without an alert, while it owed {owed}: clients that "
                f"reject the server's certificate sometimes just hang up. Chain: {seen}.",
                ("Check the client's error message or log.",
                 "Check that the client trusts the server's CA and that the server sends its intermediates."))
    if who == "client" and t.tls13 and t.client_flight_at is None:
        return (outcome, True, "client", step,
                f"The client {verb} the connection after the server's encrypted flight without answering: most "
                "often it rejected the server's certificate (which TLS 1.3 encrypts; a key log would show it).",
                ("Check the client's error message or log.",
                 "Check that the client trusts the server's CA and the certificate's names and dates."))
    return (outcome, True, who, step, f"The {who} {verb} the connection {step} without an alert.{owed_text}",
            (f"Check the {who}'s logs for why it ended the handshake.",))


def _hidden_by_encryption(t: Tracker) -> bool:
    """An inferred diagnosis that decrypted records would have made exact: TLS 1.3 after the
    ServerHello, or encrypted TLS <= 1.2 records, and nothing was decrypted."""
    if t.decrypted:
        return False
    if t.tls13 and t.server_hello is not None:
        return True
    return t.client.protected > 0 or t.server.protected > 0


def _chain_checks(t: Tracker, outcome: str) -> tuple[str, ...]:
    if outcome == "server_cert_rejected" and t.server_chain_problems:
        return tuple(f"Server chain: {p}." for p in dict.fromkeys(t.server_chain_problems))[:6]
    if outcome in ("client_cert_rejected", "client_auth_failed") and t.client_chain_problems:
        return tuple(f"Client chain: {p}." for p in dict.fromkeys(t.client_chain_problems))[:6]
    return ()


def timings(t: Tracker) -> dict[str, float]:
    out: dict[str, float] = {}
    ch = t.client_hello_at
    if ch is not None:
        out["until_client_hello"] = round(ch - t.started, 6)
        if t.server_hello_at is not None:
            out["client_hello_to_server_hello"] = round(t.server_hello_at - ch, 6)
        if t.server_hello_at is not None and t.server_flight_done_at is not None:
            out["server_flight"] = round(t.server_flight_done_at - t.server_hello_at, 6)
        if t.complete_at is not None:
            out["handshake"] = round(t.complete_at - ch, 6)
        elif t.first_fatal is not None:
            out["until_failure"] = round(t.first_fatal.at - ch, 6)
    if t.end_at is not None:
        out["connection"] = round(t.end_at - t.started, 6)
    return out


def client_certificate_state(t: Tracker) -> str:
    cmsg = t.client.certificate_msg
    if cmsg is not None:
        return "empty" if cmsg.is_empty else "sent"
    if t.cert_request is not None:
        return "withheld" if (t.ssl3_no_certificate or t.client.ccs or t.first_fatal is not None) else "not_seen"
    if t.tls13 and not t.options.keylog:
        return "not_seen"  # the request would be encrypted
    return "not_requested" if t.server_hello is not None else "not_seen"


def summarize(t: Tracker, d: Diagnosis) -> ConnectionSummary:
    return ConnectionSummary(
        sni=t.client_hello.server_name if t.client_hello is not None else None,
        version=version_name(t.version) if t.version is not None and (t.server_hello is not None or t.sslv2) else None,
        cipher_suite=cipher_suite_name(t.cipher_suite) if t.cipher_suite is not None else None,
        alpn=t.alpn_chosen,
        resumed=t.resumed,
        client_certificate=client_certificate_state(t),
        outcome=d.outcome,
        diagnosis=d.cause if d.certain else f"(inferred) {d.cause}",
    )
