"""The analyzer's outputs: findings, the per-connection summary and the diagnosis.

These are the contract between the analyzer and every sink (console, session JSON, replay).
Finding codes and outcomes are stable strings that scripts match on; they are documented in
``docs/findings.md``, generated from the catalog.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from tlsproxy.fastbuild import frozen_builder
from tlsproxy.wire.events import Direction

_F = dict(frozen=True, slots=True, kw_only=True)


class Severity(enum.IntEnum):
    info = 1
    warning = 2
    error = 3

    @classmethod
    def parse(cls, text: str) -> Severity:
        return cls[text.lower()]


@dataclass(**_F)
class Finding:
    """One observation about a connection.

    ``event_seq`` is the sequence number (per connection, from 0) of the event it concerns, or
    ``None`` for findings about the whole connection (closes, stalls, the diagnosis).
    """

    code: str
    severity: Severity
    title: str
    detail: str
    hints: tuple[str, ...] = ()
    direction: Direction | None = None
    event_seq: int | None = None
    at: float | None = None


# Outcomes scripts can match on (documented in docs/findings.md).
OUTCOMES: dict[str, str] = {
    "established": "The handshake completed.",
    "client_cert_missing": "The server required a client certificate and the client sent none.",
    "client_cert_rejected": "The client sent a certificate and the server rejected it.",
    "server_cert_rejected": "The client rejected the server's certificate chain.",
    "version_mismatch": "Client and server have no protocol version in common.",
    "no_shared_parameters": "No common cipher suite, group or signature algorithm (or the server refused the hello).",
    "alert": "Another fatal alert ended the handshake.",
    "closed_by_client": "The client closed the connection during the handshake without an alert.",
    "closed_by_server": "The server closed the connection during the handshake without an alert.",
    "reset_by_client": "The client reset the connection during the handshake.",
    "reset_by_server": "The server reset the connection during the handshake.",
    "no_server_hello": "The client sent a ClientHello and never got a ServerHello.",
    "not_tls": "At least one side did not speak TLS.",
    "upstream_unreachable": "The proxy could not connect to the server.",
    "incomplete": "The connection is still open or the capture ends before the handshake did.",
    "client_auth_failed": "Inferred (TLS 1.3 without keys): the server aborted right after the client's "
    "certificate/Finished flight; a missing or rejected client certificate.",
}


@dataclass(**_F)
class Diagnosis:
    """What went wrong (or that nothing did), in words for the engineer at the keyboard.

    ``certain`` is false when the outcome is inferred (e.g. from the size of an encrypted record).
    ``gave_up`` is the side that ended the handshake (``client``/``server``/``None``), ``step``
    where it happened (``after server_hello_done``), ``cause`` one sentence, ``checks`` an ordered
    list of things to check.  ``negotiation`` shows offer against choice, ``timings`` the seconds
    each phase took.
    """

    outcome: str
    certain: bool
    gave_up: str | None
    step: str | None
    cause: str
    checks: tuple[str, ...] = ()
    negotiation: dict[str, object] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


@dataclass(**_F)
class ConnectionSummary:
    """One line of the run summary and the ``summary`` object of the session JSON."""

    sni: str | None = None
    version: str | None = None
    cipher_suite: str | None = None
    alpn: str | None = None
    resumed: bool | None = None
    client_certificate: str | None = None  # "not_requested" | "sent" | "empty" | "withheld" | "not_seen"
    outcome: str = "incomplete"
    diagnosis: str = ""


# Positional builders for the analyzer's per-connection paths (see tlsproxy.fastbuild): the same
# objects as the keyword constructors give, without a per-field object.__setattr__ each.
build_finding = frozen_builder(Finding)  # (code, severity, title, detail, hints, direction, event_seq, at)
build_diagnosis = frozen_builder(Diagnosis)  # (outcome, certain, gave_up, step, cause, checks, negotiation, timings)
build_summary = frozen_builder(ConnectionSummary)
# (sni, version, cipher_suite, alpn, resumed, client_certificate, outcome, diagnosis)
