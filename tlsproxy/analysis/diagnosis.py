"""One diagnosis per connection: an outcome scripts can match on, who gave up at which step, the
most likely cause in one sentence and an ordered list of what to check.

Outcomes (``model.OUTCOMES``), decided in this order — the first that applies wins:

1. ``not_tls`` — either side's bytes were not TLS (and no handshake completed).
2. ``upstream_unreachable`` — the proxy could not connect to the server.
3. ``established`` — the handshake completed (``certain=False`` when TLS 1.3 completion was
   inferred without keys).
4. A side that closed its direction (FIN) while it still owed handshake messages, before any
   fatal alert (``Tracker.hang_up``): it gave up there.  ``closed_by_<side>`` read with the step
   and the turn of that moment; an alert or a reset from the peer afterwards is named as the peer's
   reaction.  A client that closes before any ServerHello gave up by itself when it did so within
   ``QUICK_GIVE_UP`` of its (promptly sent) ClientHello; after a longer wait it is
   ``no_server_hello``; a ClientHello seen late and a close right after it is unclear
   (``certain=False``).  A connection the client closes without sending a byte is a port check or
   probe, whatever the server answers.
5. The first fatal alert, read with who sent it and when (``rules.alerts.interpret``):
   ``version_mismatch``, ``no_shared_parameters``, ``client_cert_missing``,
   ``client_cert_rejected``, ``server_cert_rejected``, or ``alert``.  An encrypted abort inferred
   from record sizes gives the same outcomes (or ``client_auth_failed`` when a TLS 1.3 server
   aborted after the client's flight and we cannot tell a missing certificate from a rejected one)
   with ``certain=False``.
6. No alert, the connection ended during the handshake: ``reset_by_client`` / ``reset_by_server``,
   ``closed_by_client`` / ``closed_by_server`` (with the step and what the other side owed; a
   server that closes after the client withheld a requested certificate gives
   ``client_cert_missing``, inferred), ``no_server_hello`` when the client gave up waiting (or an
   idle timeout hit) before any ServerHello; the same timing rule as in 4 for a client reset.
7. ``incomplete`` — still open, the capture stops, or the proxy shut down.

The diagnosis says "unclear" rather than guess: inferred outcomes are marked, and the cause then
names the evidence.  A failure always comes with at least one thing to check; the key-log advice
goes with inferred failures only, never with a handshake that completed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tlsproxy.analysis.model import ConnectionSummary, Diagnosis, Severity, build_diagnosis, build_summary
from tlsproxy.analysis.negotiation import negotiation, offer_summary
from tlsproxy.analysis.rules.alerts import KEYLOG_HOWTO, Interpretation, interpret, label
from tlsproxy.analysis.rules.closes import after_hang_up, closer, duration, gave_up_first
from tlsproxy.analysis.rules.stalls import waiting
from tlsproxy.wire.registry import cipher_suite_name, version_name

if TYPE_CHECKING:
    from tlsproxy.analysis.tracker import HangUp, Tracker

_CLIENT_CERT_CHECKS = (
    "Check that the client is configured with a certificate and private key.",
    "Check that the certificate is issued under one of the CAs the server names in its request.",
    "Check that it has not expired (and the clocks are right) and that the client can read the private key.",
)


#: A client that closes sooner than this after its ClientHello gave up by itself (an error of its
#: own, a very short timeout, a probe): too soon to say the server never answered.  A longer silence
#: before the close is read as a server that did not answer.
QUICK_GIVE_UP = 1.0

_ERROR, _WARNING = Severity.error, Severity.warning  # enum member lookups are slow in Python 3.11

_Decision = tuple[str, bool, str | None, str | None, str, tuple[str, ...]]


def diagnose(t: Tracker) -> Diagnosis:
    outcome, certain, gave_up, step, cause, checks = _decide(t)
    if not certain and _hidden_by_encryption(t):
        # How to get a key log is advice for an inferred failure, not noise on a success; a key log
        # that was given and did not open the connection is worth saying either way.
        if t.options.keylog:
            checks = (*checks, "Check that the key log is the one this client wrote during this connection (its "
                      "client random must be in it).")
        elif outcome != "established":
            checks = (*checks, KEYLOG_HOWTO)
    if not checks and outcome != "established":
        checks = (f"Check the {gave_up}'s log for why it ended the handshake." if gave_up in ("client", "server")
                  else "Look at both sides' logs for why the handshake ended.",)
    return build_diagnosis(outcome, certain, gave_up, step, cause, tuple(dict.fromkeys(checks)), negotiation(t),
                           timings(t))


def _decide(t: Tracker) -> _Decision:
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
    hang_up = gave_up_first(t)
    if hang_up is not None:
        return _hung_up(t, hang_up)
    fatal = t.first_fatal
    if fatal is not None:
        interp = fatal.interpretation
        if t.decrypted and not fatal.inferred:
            # Records decrypted after the alert was read (their secrets came later) may have shown
            # what explains it (the server's chain in TLS 1.3): read it again with everything known.
            interp = interpret(t, fatal.direction, fatal.description, fatal.step, seq=fatal.seq)
        if not isinstance(interp, Interpretation):
            interp = Interpretation("alert", "A fatal alert ended the handshake.")
        checks = interp.checks + _chain_checks(t, interp.outcome)
        if not checks:
            checks = (f"Check the {fatal.direction.sender}'s log: it sent {label(fatal.description)} and says why "
                      f"in more words there.",)
        return (interp.outcome, not fatal.inferred, fatal.direction.sender, fatal.step, interp.cause, checks)
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
    errors = [f for f in t.findings if f.severity is _ERROR]
    warnings = [f for f in t.findings if f.severity is _WARNING]
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


def _hung_up(t: Tracker, h: HangUp) -> _Decision:
    """A side closed its direction while it still owed handshake messages (see ``closes``): it gave
    up there, read with the step and the turn of that moment."""
    after = after_hang_up(t, h)
    if h.sent_nothing and h.side == "client":
        if not t.server.bytes_seen:
            cause = ("The client opened the connection and closed it before either side sent a byte: a port check "
                     "or health probe (or a client that changed its mind), not a TLS failure.")
        else:
            cause = ("The client opened the connection and closed it without sending a byte (a port check or "
                     f"health probe, or a client that changed its mind).{after}")
        return ("closed_by_client", True, "client", h.step, cause,
                ("If a real client did this, check that it is configured for TLS on this port; port checks and "
                 "health probes do this on purpose.",))
    if h.since_client_hello is None:  # before any ClientHello
        if h.side == "client":
            return ("closed_by_client", True, "client", h.step,
                    f"The client closed the connection before it sent a ClientHello (a port check, health probe or "
                    f"a client that gave up).{after}",
                    ("If a real client did this, check that it is configured for TLS on this port.",))
        return _server_refused_tls("closed", h.step, f" {duration(h.since_start)} after it opened,", after)
    if h.side == "client" and not h.server_hello:
        return _client_left_early(t, "closed", h.since_client_hello, h.since_start, h.step, after)
    return _ended(t, how="fin", who=h.side, step=h.step, turn=h.turn, owed=h.owed, after=after)


def _client_left_early(t: Tracker, verb: str, since_hello: float | None, since_start: float, step: str,
                       after: str) -> _Decision:
    """The client closed or reset before any ServerHello: quickly means it gave up by itself, after
    a long silence it means the server did not answer.  A ClientHello seen late (the proxy held it
    while it connected upstream, or a slow client) hides how long the client really waited: then
    it is unclear which."""
    outcome = f"{'reset' if verb == 'reset' else 'closed'}_by_client"
    if since_hello is None:
        since_hello = since_start
    hello_delay = max(0.0, since_start - since_hello)  # from the connection's start to the ClientHello
    if since_hello < QUICK_GIVE_UP and hello_delay < QUICK_GIVE_UP:
        return (outcome, True, "client", step,
                f"The client gave up {duration(since_hello)} after its ClientHello: it {verb} the connection before "
                f"a ServerHello could reasonably arrive, too soon to blame the server for not answering.{after}",
                ("Check the client's log or error message: it hung up by itself (an error on its side, a very short "
                 "handshake timeout, or a probe that only checks that TLS is offered).",
                 "If the client's handshake timeout is that short, the server may just be slower than that."))
    if since_hello < QUICK_GIVE_UP:
        return (outcome, False, "client", step,
                f"The client {verb} the connection {duration(since_hello)} after its ClientHello went by, before "
                f"any ServerHello, but that ClientHello only came {duration(hello_delay)} after the "
                f"connection opened (held up on the way, for example while the proxy connected to the server, or "
                f"a slow client): unclear whether the client gave up by itself or had waited that long for the "
                f"server.{after}",
                ("Check the client's log for a handshake or connect timeout.",
                 "Check how long the proxy took to connect to the server (its log), and the server's accept "
                 "backlog."))
    return ("no_server_hello", True, "client", step,
            f"The client {verb} the connection {duration(since_hello)} after its ClientHello without getting a "
            f"ServerHello: the server never answered "
            f"the ClientHello.{after}",
            ("Check that the server is up and speaks TLS on this port.",
             "Check for a firewall or proxy swallowing the ClientHello."))


def _server_refused_tls(verb: str, step: str, since: str = "", after: str = "") -> _Decision:
    """The server closed (``verb`` "closed") or reset a new connection before any ClientHello
    reached it: it is not taking TLS there, or something in front of it is not."""
    present = "closes" if verb == "closed" else "resets"
    return (f"{verb}_by_server", True, "server", step,
            f"The server {verb} the connection{since} before any ClientHello reached it: it is not taking TLS "
            f"connections here (an access rule for the address it sees, a connection limit, a service shutting "
            f"down), or something in front of it {verb} the connection.{after}",
            ("Check the server's log, its access rules and its connection limits.",
             f"Check for a load balancer or firewall in front of it that {present} new connections."))


def _no_alert(t: Tracker) -> _Decision:
    how = t.end_how
    step = t.step_text()
    turn, owed = waiting(t)
    owed_text = f" The {turn} still owed {owed}." if turn else ""
    if how is None or how in ("capture_end", "shutdown", "error"):
        why = {None: "The connection is still open", "capture_end": "The capture ends",
               "shutdown": "The proxy shut down", "error": "The connection failed"}[how]
        return ("incomplete", True, None, step, f"{why} {step}, before the handshake completed.{owed_text}",
                ("Capture or watch longer to see how it ends.",) if how != "error" else
                ("Look at the proxy's log for the socket error.",))
    who = closer(t, how, t.end_by)
    if t.client_hello is None and t.sslv2_hello is None:
        if how == "reset" and who == "server":
            return _server_refused_tls("reset", step)
        if how == "reset" and who:
            return (f"reset_by_{who}", True, who, step, f"The {who} reset the connection before any ClientHello.",
                    (f"If a real {who} did this, check its log; a port check or health probe may reset on purpose.",))
        gone = who or "client"
        return (f"closed_by_{gone}" if gone in ("client", "server") else "incomplete", True, who, step,
                "The connection closed before the client sent a ClientHello (a port check, health probe or a client "
                "that gave up).", ("If a real client did this, check that it is configured for TLS on this port.",))
    if how == "idle_timeout":
        outcome = "no_server_hello" if t.server_hello is None and not t.sslv2 else "incomplete"
        return (outcome, True, turn, step, f"The handshake stopped {step} and the connection timed out.{owed_text}",
                (f"Look at the {turn}: it never sent {owed}." if turn else "Look at both sides' logs.",
                 "Check for a firewall dropping packets in one direction."))
    if who not in ("client", "server"):
        return ("incomplete", False, None, step, f"The connection ended ({how}) {step}; who ended it is unknown."
                f"{owed_text}", ("Look at both sides' logs for who ended the connection and why.",))
    return _ended(t, how=how, who=who, step=step, turn=turn, owed=owed, after="")


def _ended(t: Tracker, *, how: str, who: str, step: str, turn: str | None, owed: str, after: str) -> _Decision:
    """The ``who`` side closed (``fin``) or reset the connection at ``step`` without an alert, while
    ``turn`` owed ``owed``; ``after`` says what the peer did next."""
    owed_text = f" The {turn} still owed {owed}." if turn else ""
    verb = "reset" if how == "reset" else "closed"
    outcome = f"{'reset' if how == 'reset' else 'closed'}_by_{who}"
    if t.server_hello is None and not t.sslv2 and 2 in t.server.messages:
        return (outcome, False, who, step, f"The server answered with a ServerHello this tool could not decode "
                f"(see the decode error), then the {who} {verb} the connection; unclear why.{after}",
                ("Look at the decode error finding: a pre-standard or broken ServerHello.",))
    if t.server_hello is None and not t.sslv2:
        if who == "client":
            end = t.end_at if t.end_at is not None else t.progress_at
            ch = t.client_hello_at
            return _client_left_early(t, verb, None if ch is None else max(0.0, end - ch),
                                      max(0.0, end - t.started), step, after)
        from tlsproxy.analysis.rules.versions import client_max

        top = client_max(t)
        if top is not None and top < 0x0303 and not (top >> 8 == 0x7F):
            return ("version_mismatch", False, "server", step,
                    f"The server {verb} the connection right after a ClientHello offering at most "
                    f"{version_name(top)}: it most likely refuses versions below TLS 1.2 (inferred; it sent no "
                    f"alert).{after}", ("Enable TLS 1.2 or 1.3 in the client.",))
        cause = (f"The server {verb} the connection right after the ClientHello without an alert: it refused the "
                 f"offer silently (no shared version, cipher suite, group or signature algorithm, or an unknown SNI "
                 f"name), or something in front of it dropped the connection. The client offered {offer_summary(t)}."
                 f"{after}")
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
                f"{verb} the connection without an alert (inferred).{after}", _CLIENT_CERT_CHECKS)
    if who == "client" and turn == "client" and t.server.certs is not None:
        problems = t.server_chain_problems
        seen = ("; ".join(problems) if problems else "nothing wrong visible in the chain from here")
        return (outcome, True, "client", step,
                f"The client {verb} the connection {step} without an alert, while it owed {owed}: clients that "
                f"reject the server's certificate sometimes just hang up. Chain: {seen}.{after}",
                ("Check the client's error message or log.",
                 "Check that the client trusts the server's CA and that the server sends its intermediates."))
    if who == "client" and t.tls13 and t.client_flight_at is None:
        return (outcome, True, "client", step,
                f"The client {verb} the connection after the server's encrypted flight without answering: most "
                f"often it rejected the server's certificate (which TLS 1.3 encrypts; a key log would show it).{after}",
                ("Check the client's error message or log.",
                 "Check that the client trusts the server's CA and the certificate's names and dates."))
    return (outcome, True, who, step, f"The {who} {verb} the connection {step} without an alert.{owed_text}{after}",
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
    return build_summary(
        t.client_hello.server_name if t.client_hello is not None else None,  # sni
        version_name(t.version) if t.version is not None and (t.server_hello is not None or t.sslv2) else None,
        cipher_suite_name(t.cipher_suite) if t.cipher_suite is not None else None,
        t.alpn_chosen,
        t.resumed,
        client_certificate_state(t),
        d.outcome,
        d.cause if d.certain else f"(inferred) {d.cause}",  # diagnosis
    )
