"""Client authentication (mutual TLS): what the server asked for and what the client did.

Field knowledge encoded here: a client without a suitable certificate sends an empty Certificate
(TLS >= 1.0) or, in SSL 3.0, a warning no_certificate(41).  Browsers, Windows (SChannel) and Java
offer only certificates that chain to one of the CA names in the CertificateRequest and silently
send nothing otherwise; OpenSSL and GnuTLS clients send their configured certificate anyway, and
the server then answers unknown_ca(48) or bad_certificate(42).  Expired certificates, wrong clocks
and unreadable private keys are the usual causes of both.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tlsproxy.analysis import chain as chainlib
from tlsproxy.analysis.catalog import make_finding
from tlsproxy.analysis.model import Finding
from tlsproxy.analysis.rules import certificates
from tlsproxy.wire import events as ev
from tlsproxy.wire.messages import Certificate, CertificateRequest
from tlsproxy.wire.registry import certificate_type_name, signature_scheme_name

if TYPE_CHECKING:
    from tlsproxy.analysis.tracker import Tracker

_MAX_LISTED = 8


def _names(cas: tuple[str, ...]) -> str:
    shown = "; ".join(cas[:_MAX_LISTED])
    return shown + (f"; ... ({len(cas)} in all)" if len(cas) > _MAX_LISTED else "")


def on_certificate_request(t: Tracker, seq: int, hs: ev.HandshakeMessage, cr: CertificateRequest) -> list[Finding]:
    d, at = hs.direction, hs.at
    parts = []
    if cr.certificate_authorities:
        parts.append(f"acceptable CAs: {_names(cr.certificate_authorities)}")
    else:
        parts.append("no CA names (any CA)")
    if cr.certificate_types:
        parts.append("certificate types: " + ", ".join(certificate_type_name(c) for c in cr.certificate_types))
    if cr.signature_algorithms:
        algs = [signature_scheme_name(a) for a in cr.signature_algorithms]
        parts.append("signature algorithms: " + ", ".join(algs[:12]) + (" ..." if len(algs) > 12 else ""))
    out = [make_finding("CLIENT_CERT_REQUESTED", "The server asked for a client certificate; " + "; ".join(parts)
                        + ".", direction=d, seq=seq, at=at)]
    if not cr.certificate_authorities:
        out.append(make_finding("CLIENT_CERT_REQUEST_NO_CA_NAMES", direction=d, seq=seq, at=at))
    return out


def on_client_certificate(t: Tracker, seq: int, hs: ev.HandshakeMessage, msg: Certificate) -> list[Finding]:
    d, at = hs.direction, hs.at
    if msg.is_empty:
        cas = t.cert_request.certificate_authorities if t.cert_request is not None else ()
        names = f" The server accepts certificates from: {_names(cas)}." if cas else (
            " The request named no CA.")
        return [make_finding("CLIENT_CERT_EMPTY", "The client answered the certificate request with an empty "
                             "Certificate: it had no certificate it was willing to send." + names,
                             direction=d, seq=seq, at=at)]
    chain = certificates.chain_of(msg)
    leaf = chain[0]
    out = [make_finding("CLIENT_CERT_SENT", f"The client sent {len(chain)} certificate(s): "
                        f"{leaf.subject or '?'} issued by {leaf.issuer or '?'}.", direction=d, seq=seq, at=at)]
    cr = t.cert_request
    if cr is not None and cr.certificate_authorities and not chainlib.chains_to_any(chain, cr.certificate_authorities):
        msg_ = (f"The client's chain ({' <- '.join(c.subject_cn or c.subject or '?' for c in chain)}, top issuer "
                f"{chain[-1].issuer or '?'}) does not reach any CA the server named: "
                f"{_names(cr.certificate_authorities)}.")
        t.client_chain_problems.append("it does not chain to any CA the server named")
        out.append(make_finding("CLIENT_CERT_CA_MISMATCH", msg_, direction=d, seq=seq, at=at))
    if leaf.parse_error is None:
        eku = leaf.extended_key_usage
        if eku and "clientAuth" not in eku and "anyExtendedKeyUsage" not in eku:
            t.client_chain_problems.append("its extended key usage lacks clientAuth")
            out.append(make_finding("CLIENT_CERT_NO_CLIENT_AUTH_EKU", "The client certificate's extended key usage "
                                    f"is {', '.join(eku)}, without clientAuth.", direction=d, seq=seq, at=at))
        if leaf.key_usage and "digital_signature" not in leaf.key_usage:
            t.client_chain_problems.append("its key usage lacks digitalSignature")
            out.append(make_finding("CLIENT_CERT_NO_DIGITAL_SIGNATURE", "The client certificate's key usage is "
                                    f"{', '.join(leaf.key_usage)}.", direction=d, seq=seq, at=at))
    out += certificates.check_chain(t, seq, hs, chain, client=True)
    return out


def on_client_key_exchange(t: Tracker, seq: int, hs: ev.HandshakeMessage) -> list[Finding]:
    if t.cert_request is None or t.client.certificate_msg is not None or t.ssl3_no_certificate:
        return []
    if t.version is not None and t.version <= 0x0300:
        return []  # SSL 3.0 clients may skip it; the no_certificate alert is optional there
    return [make_finding("CLIENT_CERT_NOT_SENT", "The server asked for a client certificate; the client sent its "
                         "ClientKeyExchange without any Certificate message.",
                         direction=hs.direction, seq=seq, at=hs.at)]


def on_client_ccs(t: Tracker, seq: int, event: ev.ChangeCipherSpec) -> list[Finding]:
    msg = t.client.certificate_msg
    if msg is None or msg.is_empty or t.client.certificate_verify or t.tls13:
        return []
    t.client_chain_problems.append("no CertificateVerify followed it (the client may not be able to use the key)")
    return [make_finding("CLIENT_CERT_NO_VERIFY", "The client sent a certificate but no CertificateVerify before "
                         "its change_cipher_spec.", direction=event.direction, seq=seq, at=event.at)]


def rejection_reasons(t: Tracker) -> list[str]:
    """What we saw that explains a rejected client certificate."""
    return list(dict.fromkeys(t.client_chain_problems))
