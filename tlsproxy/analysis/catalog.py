"""Every finding code the analyzer can emit: severity, title, explanation, hints.

This table is the single source: the rules look their codes up here (an unknown code is a bug and
raises), and ``tools/gen_findings_doc.py`` renders ``docs/findings.md`` from it, so the reference
never drifts from the code.  Codes are stable UPPER_SNAKE strings that scripts match on; a finding
may carry a more specific title and detail than the generic ones written here, and extra hints
after the catalog's own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tlsproxy.analysis.model import Finding, Severity, build_finding
from tlsproxy.wire.events import Direction

E, W, I = Severity.error, Severity.warning, Severity.info


@dataclass(frozen=True, slots=True, kw_only=True)
class Entry:
    code: str
    topic: str
    severity: Severity
    title: str
    explanation: str
    hints: tuple[str, ...] = ()


TOPICS: dict[str, str] = {
    "alerts": "Alerts",
    "closes": "Closes and resets",
    "clientauth": "Client authentication",
    "versions": "Protocol versions",
    "certificates": "Certificates",
    "ciphers": "Cipher suites and parameters",
    "nottls": "Not TLS",
    "stalls": "Stalls",
    "protocol": "Message order and parsing",
}

_ENTRIES: tuple[Entry, ...] = (
    # -- alerts ---------------------------------------------------------------------------------
    Entry(code="ALERT_FATAL", topic="alerts", severity=E, title="Fatal alert",
          explanation="A side sent a fatal alert: the connection ends here. The finding names the alert, "
                      "its plain meaning, who sent it, after which message, and the likely cause given the "
                      "handshake so far.",
          hints=("The side that sends the alert is the one that gave up; its logs say why in more words.",)),
    Entry(code="ALERT_WARNING", topic="alerts", severity=W, title="Warning alert",
          explanation="A side sent a warning-level alert other than close_notify. The connection may go on, but "
                      "the alert usually points at a configuration problem (for example unrecognized_name: the "
                      "server has no certificate for the SNI name).",
          hints=("Warning alerts are often followed by a fatal one or a close; read them together.",)),
    Entry(code="ALERT_CLOSE_NOTIFY", topic="alerts", severity=I, title="close_notify",
          explanation="A side closed the TLS session cleanly with a close_notify alert that was readable "
                      "(sent before encryption started, or decrypted with a key log); the finding's title says "
                      "which."),
    Entry(code="ALERT_NOT_ENCRYPTED_BEFORE_KEYS", topic="alerts", severity=I,
          title="Alert sent in plaintext before keys existed",
          explanation="No record can be encrypted before the sender's change_cipher_spec (TLS 1.2 and older) or "
                      "before the ServerHello (TLS 1.3), so an alert there is plaintext and is decoded as such. "
                      "This is normal for a handshake that fails early; the alert itself has its own finding.",
          hints=("Tools that call such an alert 'encrypted' are guessing; its level and description are "
                 "exactly what was sent.",)),
    Entry(code="ALERT_PLAINTEXT_AFTER_KEYS", topic="alerts", severity=I,
          title="TLS 1.3 alert sent in plaintext after the ServerHello",
          explanation="In TLS 1.3 both sides have handshake keys once the ServerHello is out, yet this alert "
                      "came as a plaintext alert record: its sender had not switched its own records to the "
                      "handshake keys yet. OpenSSL does this when it aborts right after the ServerHello (a "
                      "client rejecting the server's certificate, for example). The alert is decoded exactly as "
                      "sent and has its own finding.",
          hints=("Nothing to fix here; read the alert's own finding for why the handshake ended.",)),
    Entry(code="ALERT_MALFORMED", topic="alerts", severity=W, title="Malformed alert",
          explanation="An alert record whose body is not exactly one (level, description) pair. Whatever bytes "
                      "are there are shown; a peer that sends this is broken or not speaking TLS.",
          hints=("Look at the raw bytes: a truncated or padded alert usually comes from a buggy TLS stack or "
                 "a middlebox that rewrites traffic.",)),
    Entry(code="ALERT_ENCRYPTED_CLOSE", topic="alerts", severity=I,
          title="Encrypted alert before the close (almost surely close_notify)",
          explanation="An encrypted record of alert size was the last thing a side sent after application data, "
                      "right before its close. That is where close_notify goes, so it is almost surely a clean "
                      "close; without keys the description cannot be read."),
    Entry(code="ALERT_ENCRYPTED_HANDSHAKE", topic="alerts", severity=E,
          title="Encrypted alert during the handshake, then a close",
          explanation="During the handshake (TLS 1.2 and older: after the sender's change_cipher_spec; TLS 1.3: "
                      "after the ServerHello) a side sent an encrypted record of alert size and closed. That is "
                      "a failed handshake, inferred from position and size: the finding says which record sizes "
                      "matched. Which alert it was needs the keys.",
          hints=("Give tlsproxy a key log (SSLKEYLOGFILE) to read the alert.",
                 "Check the logs of the side that sent it: it gave up.")),
    Entry(code="ALERT_ENCRYPTED", topic="alerts", severity=I, title="Encrypted alert",
          explanation="An encrypted alert record (TLS 1.2 and older show the alert content type even when "
                      "encrypted) that is neither a close nor a handshake abort, for example a warning such as "
                      "no_renegotiation."),
    # -- closes ---------------------------------------------------------------------------------
    Entry(code="CLOSED_MID_HANDSHAKE", topic="closes", severity=E, title="Closed during the handshake without an alert",
          explanation="A side closed its direction (TCP FIN) while it still owed handshake messages, without "
                      "sending an alert: the handshake cannot complete after that, so that side gave up there, "
                      "whatever the peer does next (an alert in answer, a reset). The finding says who, after "
                      "which step and, for a client that had no ServerHello yet, how long after its ClientHello. "
                      "Servers do this when they refuse a ClientHello silently; clients when they give up on a "
                      "certificate without telling, or when they hit their own timeout.",
          hints=("The side that closed first is the one to look at; its logs usually say why.",)),
    Entry(code="RESET_MID_HANDSHAKE", topic="closes", severity=E, title="Reset during the handshake",
          explanation="The connection was reset (TCP RST) before the handshake finished. Resets come from the "
                      "peer's TCP stack (a crashed or killed process, a refused connection), from firewalls, or "
                      "from load balancers that dislike the ClientHello.",
          hints=("A reset right after the ClientHello is often a firewall or IPS matching on SNI.",)),
    Entry(code="RESET_AFTER_HANDSHAKE", topic="closes", severity=W, title="Reset after the handshake",
          explanation="The connection was reset after the handshake completed: the application on one side "
                      "aborted instead of closing."),
    Entry(code="TRUNCATED_NO_CLOSE_NOTIFY", topic="closes", severity=W,
          title="Application data ended without close_notify",
          explanation="A side closed its TCP direction after application data without first sending a "
                      "close_notify alert, so its peer cannot tell a complete response from a truncated one "
                      "(a truncation attack looks the same).",
          hints=("Many HTTP servers get away with it because HTTP framing shows the end; other protocols "
                 "cannot.",)),
    Entry(code="UPSTREAM_UNREACHABLE", topic="closes", severity=E, title="The proxy could not reach the server",
          explanation="tlsproxy accepted the client's connection but could not open the connection to the "
                      "server (refused, unreachable, timed out). The client then sees its connection closed.",
          hints=("Check the upstream address, port and that the server is listening.",)),
    Entry(code="NO_CLIENT_HELLO", topic="closes", severity=I, title="Closed before any TLS",
          explanation="The client closed the connection before it sent anything: a port check, a health probe or "
                      "a client that changed its mind. A server that answers such an empty connection with an "
                      "alert (OpenSSL sends decode_error) is reacting to it; the finding says so."),
    Entry(code="CONNECTION_IDLE_TIMEOUT", topic="closes", severity=W, title="Idle timeout during the handshake",
          explanation="The connection was closed after sitting idle before the handshake completed: one side "
                      "was waiting for the other, which never answered."),
    # -- client authentication -----------------------------------------------------------------
    Entry(code="CLIENT_CERT_REQUESTED", topic="clientauth", severity=I, title="Server requested a client certificate",
          explanation="The server sent a CertificateRequest (mutual TLS). The finding lists the CA names it "
                      "accepts, the certificate types and the signature algorithms. A client sends a certificate "
                      "only if it has one that fits."),
    Entry(code="CLIENT_CERT_REQUEST_NO_CA_NAMES", topic="clientauth", severity=I,
          title="Certificate request names no CA",
          explanation="The CertificateRequest lists no acceptable CA names. TLS reads this as 'any CA', but "
                      "browsers and some clients then offer nothing or prompt the user; OpenSSL-based clients "
                      "send whatever they are configured with.",
          hints=("If clients send no certificate, configure the server to send its client-CA list.",)),
    Entry(code="CLIENT_CERT_EMPTY", topic="clientauth", severity=W, title="Client sent an empty Certificate",
          explanation="The server asked for a client certificate and the client answered with an empty "
                      "Certificate message: it had no certificate it was willing to send. Browsers, Windows "
                      "(SChannel) and Java silently withhold a certificate that does not chain to one of the CA "
                      "names in the request; an expired certificate or an unreadable private key has the same "
                      "effect.",
          hints=("Check that the client is configured with a certificate and key at all.",
                 "Check that the certificate is issued under one of the CA names the server listed.",
                 "Check that it has not expired and that the client can read the private key.")),
    Entry(code="CLIENT_CERT_NOT_SENT", topic="clientauth", severity=W, title="Client skipped the Certificate message",
          explanation="The server asked for a client certificate and the client went straight to its "
                      "ClientKeyExchange without any Certificate message. TLS 1.0 and later require an empty "
                      "Certificate instead; skipping it is SSL 3.0 behaviour or a broken client.",
          hints=("Update the client's TLS library.",)),
    Entry(code="SSL3_NO_CERTIFICATE", topic="clientauth", severity=W, title="SSL 3.0 no_certificate alert",
          explanation="The client answered the certificate request with the SSL 3.0 warning alert "
                      "no_certificate(41): it has no certificate to send. TLS replaced this with an empty "
                      "Certificate message.",
          hints=("Configure a client certificate, and move off SSL 3.0.",)),
    Entry(code="CLIENT_CERT_SENT", topic="clientauth", severity=I, title="Client sent a certificate",
          explanation="The client answered the certificate request with a certificate chain; the finding names "
                      "the leaf and its issuer."),
    Entry(code="CLIENT_CERT_CA_MISMATCH", topic="clientauth", severity=E,
          title="Client certificate does not chain to a requested CA",
          explanation="No certificate in the client's chain is one of the CA names the server listed, nor issued "
                      "by one (issuer DNs compared along the chain). The server will most likely reject it "
                      "(unknown_ca or bad_certificate). OpenSSL and GnuTLS clients send the certificate anyway; "
                      "browsers would have withheld it.",
          hints=("Use a client certificate issued by one of the listed CAs, or add its CA to the server's "
                 "client-CA list.",
                 "If an intermediate is missing, send the client's full chain.")),
    Entry(code="CLIENT_CERT_NO_CLIENT_AUTH_EKU", topic="clientauth", severity=W,
          title="Client certificate lacks clientAuth usage",
          explanation="The client certificate has an extended key usage extension without clientAuth (or "
                      "anyExtendedKeyUsage); strict servers reject it with unsupported_certificate or "
                      "bad_certificate.",
          hints=("Issue the client certificate with extendedKeyUsage = clientAuth.",)),
    Entry(code="CLIENT_CERT_NO_DIGITAL_SIGNATURE", topic="clientauth", severity=W,
          title="Client certificate key usage lacks digitalSignature",
          explanation="The client certificate restricts its key usage without digitalSignature, which the "
                      "client needs to sign its CertificateVerify.",
          hints=("Issue the client certificate with keyUsage = digitalSignature.",)),
    Entry(code="CLIENT_CERT_NO_VERIFY", topic="clientauth", severity=E,
          title="Client certificate without CertificateVerify",
          explanation="The client sent a non-empty certificate but no CertificateVerify before its "
                      "change_cipher_spec. A client that has the certificate but cannot use the private key "
                      "(missing, wrong key, smart card not available) does this; the server must reject it.",
          hints=("Check that the client's private key matches the certificate and is readable.",)),
    # -- versions -------------------------------------------------------------------------------
    Entry(code="VERSION_SSL3", topic="versions", severity=E, title="SSL 3.0 negotiated",
          explanation="The connection uses SSL 3.0, broken by POODLE (CVE-2014-3566) and prohibited by RFC 7568.",
          hints=("Enable TLS 1.2 or 1.3 on both sides and disable SSL 3.0.",)),
    Entry(code="VERSION_SSL3_OFFERED", topic="versions", severity=W, title="Client offers SSL 3.0",
          explanation="The client's hello allows SSL 3.0 (POODLE, RFC 7568).",
          hints=("Disable SSL 3.0 in the client.",)),
    Entry(code="VERSION_DEPRECATED", topic="versions", severity=W, title="TLS 1.0 or 1.1 negotiated",
          explanation="The connection uses TLS 1.0 or 1.1, deprecated by RFC 8996 (2021); current browsers and "
                      "libraries refuse them by default.",
          hints=("Enable TLS 1.2 or 1.3 on the older side.",)),
    Entry(code="VERSION_CLIENT_MAX_DEPRECATED", topic="versions", severity=W,
          title="Client's best version is deprecated",
          explanation="The highest version the client offers is SSL 3.0, TLS 1.0 or TLS 1.1; servers that follow "
                      "RFC 8996 answer protocol_version(70) or close.",
          hints=("Upgrade the client or enable TLS 1.2 in it.",)),
    Entry(code="VERSION_DEPRECATED_OFFERED", topic="versions", severity=I, title="Client also offers TLS 1.0/1.1",
          explanation="The client's supported_versions still list TLS 1.0 or 1.1 besides newer versions. Harmless "
                      "if the server picks a newer one."),
    Entry(code="VERSION_MISMATCH", topic="versions", severity=E, title="No protocol version in common",
          explanation="One side refused the other's versions (protocol_version(70) or an early close). The "
                      "finding compares what the client offered with what the server chose or refused.",
          hints=("Make the version ranges overlap: TLS 1.2 and 1.3 are the only safe choices today.",)),
    Entry(code="SSLV2_COMPAT_HELLO", topic="versions", severity=W, title="SSLv2-compatible ClientHello",
          explanation="The client sent its hello in SSL 2.0 record format (while offering SSL 3.0 or TLS). Only "
                      "very old clients do this; modern servers drop the connection.",
          hints=("Update the client or disable its SSLv2-compatible hello.",)),
    Entry(code="SSLV2", topic="versions", severity=E, title="SSL 2.0 in use",
          explanation="Genuine SSL 2.0 (1995), completely broken (DROWN, CVE-2016-0800).",
          hints=("Disable SSL 2.0 everywhere.",)),
    Entry(code="DOWNGRADE_SENTINEL", topic="versions", severity=E, title="TLS 1.3 downgrade sentinel",
          explanation="The client offered TLS 1.3 and the server chose an older version with the RFC 8446 "
                      "downgrade marker in its random: the server supports TLS 1.3, so something in between "
                      "removed it from the offer. A conforming client aborts with illegal_parameter.",
          hints=("Look for a middlebox or TLS-terminating proxy rewriting the ClientHello.",)),
    Entry(code="RECORD_VERSION_UNUSUAL", topic="versions", severity=I, title="Unusual record-layer version",
          explanation="A record carried a version outside SSL 3.0 .. TLS 1.2, or records after the ServerHello "
                      "do not carry the negotiated version. TLS 1.3 freezes the record version at 0x0303 and "
                      "ClientHellos commonly use 0x0301; anything else is odd but usually harmless."),
    Entry(code="TLS13_DRAFT_VERSION", topic="versions", severity=I, title="TLS 1.3 draft or experimental version",
          explanation="A pre-standard TLS 1.3 version (0x7fxx drafts or an experiment code point) was offered or "
                      "chosen; only early 2017-2018 software does this."),
    # -- certificates ---------------------------------------------------------------------------
    Entry(code="CERT_CHAIN_SEEN", topic="certificates", severity=I, title="Certificate chain",
          explanation="A side sent its certificate chain; the finding names the leaf, issuer and validity."),
    Entry(code="CERT_EXPIRED", topic="certificates", severity=E, title="Certificate expired",
          explanation="A certificate in the chain is past its notAfter at the time of the connection "
                      "(--now overrides that time). Peers reject it with certificate_expired(45) or a generic "
                      "certificate alert.",
          hints=("Renew the certificate.", "If it looks valid to you, check the clock of the machine that "
                                           "checks it.")),
    Entry(code="CERT_NOT_YET_VALID", topic="certificates", severity=E, title="Certificate not yet valid",
          explanation="A certificate's notBefore is in the future at the time of the connection. This is almost "
                      "always a wrong clock on one side (or a certificate used minutes after issuance on a "
                      "machine whose clock lags).",
          hints=("Check the clocks (NTP) on the client, the server and the machine that issued it.",)),
    Entry(code="CERT_EXPIRING_SOON", topic="certificates", severity=W, title="Certificate expires within 30 days",
          explanation="A certificate in the chain expires within 30 days.",
          hints=("Renew it before it expires.",)),
    Entry(code="CERT_VALIDITY_INVALID", topic="certificates", severity=W, title="Certificate validity unreadable",
          explanation="A certificate's validity period could not be read or ends before it starts."),
    Entry(code="CERT_HOSTNAME_MISMATCH", topic="certificates", severity=E, title="Server name not in certificate",
          explanation="The name the client asked for (SNI, or --expect-host) is not among the server "
                      "certificate's subjectAltName entries. Clients reject it (bad_certificate, "
                      "certificate_unknown, or a close).",
          hints=("Add the name to the certificate's SAN list, or configure the server to pick the right "
                 "certificate for this SNI.",)),
    Entry(code="CERT_HOSTNAME_CN_ONLY", topic="certificates", severity=W, title="Host name only in the CN",
          explanation="The host name matches only the subject CN and the certificate has no DNS subjectAltName. "
                      "Browsers and modern libraries ignore the CN (RFC 6125, CA/B Forum): they reject it.",
          hints=("Reissue the certificate with the name in subjectAltName.",)),
    Entry(code="CERT_SELF_SIGNED", topic="certificates", severity=W, title="Self-signed certificate",
          explanation="The leaf certificate is signed by its own key: only clients that pin it or trust it "
                      "explicitly will accept it.",
          hints=("Use a certificate from a CA the clients trust, or distribute this one to them.",)),
    Entry(code="CHAIN_MISORDERED", topic="certificates", severity=W, title="Chain out of order",
          explanation="Certificates are not sent leaf first with each one issued by the next (RFC 5246 7.4.2). "
                      "Many clients cope; some (older Java, embedded stacks) fail.",
          hints=("Concatenate the chain file leaf first, then each issuer in turn.",)),
    Entry(code="CHAIN_INCOMPLETE", topic="certificates", severity=W, title="Chain ends without its issuer",
          explanation="The chain ends at a certificate that is not a CA and not self-signed, and its issuer was "
                      "not sent. That is fine when the peer has that issuer as a trust anchor (a private CA that "
                      "issues directly, usual for client certificates); otherwise it is a missing intermediate: "
                      "browsers may fetch it (AIA), most other clients fail with unknown_ca. Not reported when "
                      "path validation against --ca-file or the system store succeeded, nor for a client "
                      "certificate whose issuer the server named in its CertificateRequest. A warning when "
                      "path validation failed, otherwise information.",
          hints=("If the issuer is an intermediate CA, configure the full chain (leaf + intermediates).",)),
    Entry(code="CHAIN_UNRELATED", topic="certificates", severity=W, title="Unrelated certificate in chain",
          explanation="A certificate in the chain did not issue the one before it: a leftover or wrong "
                      "intermediate.",
          hints=("Rebuild the chain file from the leaf's actual issuers.",)),
    Entry(code="CHAIN_EXTRA_AFTER_ROOT", topic="certificates", severity=I, title="Certificates after the root",
          explanation="Certificates follow a self-signed root in the chain; they are not part of its path."),
    Entry(code="CHAIN_DUPLICATE", topic="certificates", severity=W, title="Duplicate certificate in chain",
          explanation="The same certificate appears twice in the chain; some clients reject such chains.",
          hints=("Remove the duplicate from the chain file.",)),
    Entry(code="CERT_UNTRUSTED", topic="certificates", severity=W, title="Chain not trusted",
          explanation="Path validation (cryptography's web-PKI verifier) against --ca-file or the system trust "
                      "store failed: the chain does not lead to a trusted root, or breaks a rule on the way. The "
                      "client may use other trust anchors, so this is a warning unless it rejected the chain.",
          hints=("Pass the CA the clients really trust with --ca-file to check against it.",)),
    Entry(code="CERT_WEAK_KEY", topic="certificates", severity=W, title="Weak certificate key",
          explanation="RSA keys under 2048 bits, EC keys under 224 bits and DSA keys are refused by current "
                      "clients and CA rules.",
          hints=("Reissue with RSA 2048+ or EC P-256.",)),
    Entry(code="CERT_WEAK_SIGNATURE", topic="certificates", severity=W, title="MD5 or SHA-1 signature",
          explanation="A certificate (other than a trust anchor) is signed with MD5 or SHA-1; collisions make "
                      "these signatures forgeable and clients reject them.",
          hints=("Reissue with SHA-256.",)),
    Entry(code="CERT_SERIAL_NEGATIVE", topic="certificates", severity=W, title="Negative serial number",
          explanation="A certificate in the chain has a negative serial number, which RFC 5280 forbids. Most TLS "
                      "stacks accept it anyway, but Go clients since 1.23 refuse to parse it (\"x509: negative "
                      "serial number\") unless run with GODEBUG=x509negativeserial=1, so the same server works "
                      "from one client and fails from another.",
          hints=("Reissue the certificate with a positive serial number (CA tools use 16 to 20 random bytes).",)),
    Entry(code="CERT_NO_SERVER_AUTH_EKU", topic="certificates", severity=W, title="Server certificate lacks serverAuth",
          explanation="The server certificate has an extended key usage extension without serverAuth; clients "
                      "reject it for TLS servers.",
          hints=("Issue the server certificate with extendedKeyUsage = serverAuth.",)),
    Entry(code="CERT_CA_AS_LEAF", topic="certificates", severity=W, title="CA certificate used as a leaf",
          explanation="The end-entity certificate is marked as a CA (basicConstraints CA:TRUE); web-PKI "
                      "verifiers refuse CA certificates as leaves.",
          hints=("Use a proper end-entity certificate.",)),
    Entry(code="CERT_UNPARSABLE", topic="certificates", severity=E, title="Certificate cannot be parsed",
          explanation="A certificate in the chain is not valid DER X.509 or has fields that cannot be read; "
                      "peers reject it with bad_certificate or decode_error."),
    Entry(code="CERT_EMPTY_SERVER_CHAIN", topic="certificates", severity=E, title="Server sent no certificate",
          explanation="The server's Certificate message is empty; a server must send one (except with PSK)."),
    # -- ciphers and parameters -----------------------------------------------------------------
    Entry(code="CIPHER_WEAK_OFFERED", topic="ciphers", severity=W, title="Client offers weak cipher suites",
          explanation="The ClientHello includes NULL, anonymous, EXPORT, RC4, DES or 3DES suites. A server could "
                      "pick them.",
          hints=("Remove them from the client's cipher list.",)),
    Entry(code="CIPHER_WEAK_CHOSEN", topic="ciphers", severity=E, title="Weak cipher suite chosen",
          explanation="The server chose a NULL, anonymous, EXPORT, RC4, DES or 3DES suite: the connection is not "
                      "meaningfully protected.",
          hints=("Remove weak suites from the server's configuration.",)),
    Entry(code="SERVER_CHOSE_UNOFFERED", topic="ciphers", severity=E, title="Server chose something not offered",
          explanation="The ServerHello picked a cipher suite or version the client did not offer; the client "
                      "must abort. A server bug or a proxy rewriting hellos.",),
    Entry(code="DHE_PRIME_WEAK", topic="ciphers", severity=W, title="Small DHE group",
          explanation="The server's finite-field Diffie-Hellman prime is under 2048 bits (Logjam); clients "
                      "refuse primes under 1024 bits and many under 2048.",
          hints=("Use ECDHE, or a 2048-bit+ DH group (RFC 7919 ffdhe2048).",)),
    Entry(code="RENEGOTIATION_INFO_MISSING", topic="ciphers", severity=W, title="No secure renegotiation",
          explanation="A TLS 1.2-or-older handshake where the client sent neither renegotiation_info nor "
                      "TLS_EMPTY_RENEGOTIATION_INFO_SCSV, or the server did not answer with renegotiation_info "
                      "(RFC 5746, CVE-2009-3555).",
          hints=("Update the TLS library of the side that lacks it.",)),
    Entry(code="RENEGOTIATION_SEEN", topic="ciphers", severity=I, title="Renegotiation",
          explanation="A second handshake ran inside the established connection (a decrypted hello, or an "
                      "encrypted handshake record after the handshake). TLS 1.3 has no renegotiation."),
    Entry(code="TLS_COMPRESSION", topic="ciphers", severity=W, title="TLS compression",
          explanation="The server chose TLS-level compression, which leaks secrets (CRIME).",
          hints=("Disable TLS compression.",)),
    Entry(code="HEARTBEAT_EXTENSION", topic="ciphers", severity=I, title="Heartbeat extension",
          explanation="The heartbeat extension (RFC 6520) was offered or accepted. Nothing uses it today; it is "
                      "the attack surface of Heartbleed."),
    Entry(code="HEARTBEAT_RECORD", topic="ciphers", severity=W, title="Heartbeat record",
          explanation="A heartbeat record was sent. Legitimate traffic almost never has them."),
    Entry(code="HEARTBLEED_PROBE", topic="ciphers", severity=E, title="Heartbleed probe",
          explanation="A heartbeat message claims a payload longer than its record holds: the signature of a "
                      "Heartbleed (CVE-2014-0160) probe. A vulnerable server answers with up to 64 KB of memory.",
          hints=("Check that the server's OpenSSL is patched (1.0.1g or later) and find who sent it.",)),
    Entry(code="NO_SNI", topic="ciphers", severity=I, title="No SNI",
          explanation="The ClientHello has no server_name extension. Servers hosting several names then pick a "
                      "default certificate, which may not be the one the client wanted."),
    Entry(code="ALPN_NO_AGREEMENT", topic="ciphers", severity=W, title="ALPN offered but none agreed",
          explanation="The client offered application protocols (ALPN) and the server chose none. Clients that "
                      "need one (HTTP/2, gRPC) will fail or fall back.",
          hints=("Enable one of the offered protocols on the server.",)),
    Entry(code="HELLO_RETRY_REQUEST", topic="ciphers", severity=I, title="HelloRetryRequest",
          explanation="The server asked the client to retry with another key share (TLS 1.3). This costs one "
                      "extra round trip on every connection.",
          hints=("Let the client send a key share for the group the server prefers.",)),
    Entry(code="SESSION_RESUMED", topic="ciphers", severity=I, title="Session resumed",
          explanation="The handshake resumed an earlier session (session ID, ticket or TLS 1.3 PSK): no "
                      "certificates are exchanged."),
    Entry(code="EARLY_DATA", topic="ciphers", severity=I, title="0-RTT early data",
          explanation="The client sent 0-RTT data before the handshake completed; it can be replayed."),
    # -- not TLS --------------------------------------------------------------------------------
    Entry(code="NOT_TLS_CLIENT", topic="nottls", severity=E, title="Client is not speaking TLS",
          explanation="The client's first bytes are not a TLS hello (for example a plain HTTP request sent to a "
                      "TLS port).",
          hints=("Use https:// (or the client's TLS option) for this port, or point the client at the "
                 "plaintext port.",)),
    Entry(code="NOT_TLS_SERVER", topic="nottls", severity=E, title="Server answered in plain text",
          explanation="The server's answer is not TLS (for example 'HTTP/1.1 400' from a plain HTTP server, or "
                      "a protocol banner). The client is talking TLS to a plaintext port, or the service "
                      "expects STARTTLS first.",
          hints=("Point the client at the TLS port, or enable TLS on this one.",
                 "For SMTP/IMAP/POP3/FTP/XMPP banners: the service wants STARTTLS, not TLS from the first "
                 "byte.")),
    Entry(code="STARTTLS", topic="nottls", severity=I, title="STARTTLS upgrade",
          explanation="A plaintext protocol switched to TLS (STARTTLS, STLS, AUTH TLS)."),
    # -- stalls ---------------------------------------------------------------------------------
    Entry(code="HANDSHAKE_STALLED", topic="stalls", severity=W, title="Handshake stalled",
          explanation="The handshake has not moved for a while: the finding says whose turn it is and what it "
                      "waits for. A side that waits forever usually hides a firewall dropping packets, a server "
                      "stuck on a slow certificate lookup, or a client waiting for a user prompt.",
          hints=("Look at the side whose turn it is.",)),
    # -- protocol -------------------------------------------------------------------------------
    Entry(code="UNEXPECTED_MESSAGE", topic="protocol", severity=W, title="Unexpected handshake message",
          explanation="A handshake message arrived where the RFC state machine (TLS 1.0-1.2 or 1.3) does not "
                      "allow it; a conforming peer answers unexpected_message(10).",),
    Entry(code="DECODE_ERROR", topic="protocol", severity=W, title="Could not decode",
          explanation="A record, handshake message or field could not be parsed; the finding names the field. "
                      "A peer would answer decode_error(50)."),
    Entry(code="PARSING_STOPPED", topic="protocol", severity=I, title="Stopped parsing a direction",
          explanation="tlsproxy stopped parsing one direction (the bytes keep flowing unchanged), for example "
                      "after a capture gap or an oversized message."),
    Entry(code="STREAM_GAP", topic="protocol", severity=I, title="Bytes missing from capture",
          explanation="The capture lost bytes of this connection, so some of it could not be analysed."),
    Entry(code="DECRYPTION_FAILED", topic="protocol", severity=W,
          title="Records did not authenticate with the key log's secrets",
          explanation="The key log has secrets for this connection's client random, but its records did not "
                      "authenticate with them (AEAD tag, MAC or padding wrong): a wrong key log for this "
                      "connection (another run's file, a line edited by hand), or the traffic was modified on the "
                      "way. Reported once per side; the records are then judged by their sizes, as without a key "
                      "log.",
          hints=("Check that the key log was written by this very client run (client randoms never repeat).",
                 "If the key log is right, something between the peers changed the bytes.")),
    Entry(code="DECRYPTION_UNSUPPORTED", topic="protocol", severity=I, title="Records not decrypted",
          explanation="A key log was given, but these records cannot be opened here: a protocol version or "
                      "cipher suite tlsproxy does not decrypt, or, when replaying a saved session, ciphertext "
                      "that was never stored (application data). They are judged by their sizes."),
    Entry(code="CCS_INVALID", topic="protocol", severity=W, title="Malformed change_cipher_spec",
          explanation="A change_cipher_spec record whose body is not the single byte 0x01."),
    Entry(code="INTERNAL_ERROR", topic="protocol", severity=W, title="tlsproxy failed on this connection",
          explanation="The parser or the analyzer raised on this connection. The bytes were relayed unchanged; "
                      "only the analysis stopped.",
          hints=("Please report it with the session file or capture.",)),
)

CATALOG: dict[str, Entry] = {e.code: e for e in _ENTRIES}
assert len(CATALOG) == len(_ENTRIES), "duplicate finding code"
_CATALOG_HINTS: dict[str, tuple[str, ...]] = {e.code: tuple(dict.fromkeys(e.hints)) for e in _ENTRIES}


def make_finding(
    code: str,
    detail: str | None = None,
    *,
    title: str | None = None,
    hints: Sequence[str] = (),
    direction: Direction | None = None,
    seq: int | None = None,
    at: float | None = None,
    severity: Severity | None = None,
) -> Finding:
    """A finding for ``code``: the catalog supplies severity, title and hints unless overridden;
    ``hints`` are added after the specific ones, duplicates dropped."""
    entry = CATALOG[code]
    # dict.fromkeys keeps the first of each hint, in order; without specific hints the catalog's own
    # (deduplicated once, below) are the answer, and a connection makes many findings.
    merged = tuple(dict.fromkeys((*hints, *entry.hints))) if hints else _CATALOG_HINTS[code]
    return build_finding(code, severity or entry.severity, title or entry.title, detail or entry.explanation,
                         merged, direction, seq, at)
