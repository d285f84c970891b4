"""Decoded handshake messages and extensions as JSON-ready dicts with IANA names.

Shared by the session JSON (which stores them) and the verbose transcript (which prints them), so
that both say the same thing.  Wire integers become registry names (``TLS_AES_128_GCM_SHA256``,
``x25519``, ``GREASE``, ``unknown(0x1a2b)``); byte strings that identify nothing secret become hex
or a length; certificates become the facts of :func:`certificate_to_dict` without their DER.
"""

from __future__ import annotations

import dataclasses
import enum
from datetime import UTC, datetime
from typing import Any

from tlsproxy.wire import extensions as ext
from tlsproxy.wire import messages as m
from tlsproxy.wire import registry as reg
from tlsproxy.wire.certs import CertificateInfo, certificate_to_dict
from tlsproxy.wire.sslv2 import MESSAGE_NAMES as SSLV2_NAMES

__all__ = ["certificate_brief", "extension_dict", "jsonable", "message_dict", "message_name", "ssl2_spec_name"]

# Byte strings up to this size are shown as hex (randoms, session ids, renegotiation_info); longer
# ones only by length, so a key share or a ticket never bloats the output.
_HEX_MAX = 32


def message_name(msg_type: int | None) -> str:
    return "unknown" if msg_type is None else reg.handshake_type_name(msg_type)


def ssl2_spec_name(spec: int) -> str:
    """SSLv2 cipher specs are 24-bit; the ones below 0x010000 are TLS suites carried in a v2 hello."""
    if spec >> 16 == 0:
        return reg.cipher_suite_name(spec)
    return f"SSL2_CK(0x{spec:06x})"


def jsonable(value: Any) -> Any:
    """Generic conversion: dataclasses to dicts, tuples to lists, bytes to hex or a length."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        return data.hex() if len(data) <= _HEX_MAX else {"length": len(data)}
    if isinstance(value, datetime):
        return value.astimezone(UTC).replace(tzinfo=None).isoformat() + "Z"
    if isinstance(value, CertificateInfo):
        return certificate_to_dict(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value) if f.repr}
    if isinstance(value, (tuple, list, set, frozenset)):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    return repr(value)


def _names(fn: Any, value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return fn(value)
    if isinstance(value, tuple):
        return [fn(v) if isinstance(v, int) else jsonable(v) for v in value]
    return jsonable(value)


def _key_share(value: Any) -> Any:
    if isinstance(value, ext.KeyShareEntry):
        return {"group": reg.group_name(value.group), "key_exchange_length": value.key_exchange_length}
    if isinstance(value, tuple):
        return [_key_share(v) for v in value]
    if isinstance(value, int):
        return reg.group_name(value)  # HelloRetryRequest: selected_group
    return jsonable(value)


_EXT_VALUE = {
    ext.SUPPORTED_VERSIONS: lambda v: _names(reg.version_name, v),
    ext.SUPPORTED_GROUPS: lambda v: _names(reg.group_name, v),
    ext.EC_POINT_FORMATS: lambda v: _names(reg.ec_point_format_name, v),
    ext.SIGNATURE_ALGORITHMS: lambda v: _names(reg.signature_scheme_name, v),
    ext.SIGNATURE_ALGORITHMS_CERT: lambda v: _names(reg.signature_scheme_name, v),
    ext.PSK_KEY_EXCHANGE_MODES: lambda v: _names(reg.psk_key_exchange_mode_name, v),
    ext.COMPRESS_CERTIFICATE: lambda v: _names(reg.certificate_compression_algorithm_name, v),
    ext.HEARTBEAT: lambda v: _names(reg.heartbeat_mode_name, v),
    ext.KEY_SHARE: _key_share,
}


def extension_dict(e: ext.Extension) -> dict[str, Any]:
    out: dict[str, Any] = {"type": reg.extension_name(e.type), "code": e.type, "length": len(e.data)}
    if e.error is not None:
        out["error"] = e.error
    elif e.value is not None:
        convert = _EXT_VALUE.get(e.type, jsonable)
        out["value"] = convert(e.value)
    return out


def certificate_brief(info: CertificateInfo) -> dict[str, Any]:
    """The few facts a transcript line shows for a certificate."""
    return {
        "subject": info.subject,
        "issuer": info.issuer,
        "not_after": jsonable(info.not_after),
        "sha256": info.sha256,
    }


# Field name -> registry lookup, for the message dataclasses.
_FIELD_NAMES: dict[str, Any] = {
    "legacy_version": reg.version_name,
    "cipher_suites": reg.cipher_suite_name,
    "cipher_suite": reg.cipher_suite_name,
    "compression_methods": reg.compression_method_name,
    "compression_method": reg.compression_method_name,
    "certificate_types": reg.certificate_type_name,
    "signature_algorithms": reg.signature_scheme_name,
    "signature_algorithm": reg.signature_scheme_name,
    "named_group": reg.group_name,
    "status_type": reg.certificate_status_type_name,
}


def message_dict(message: object) -> dict[str, Any]:
    """A decoded handshake (or SSLv2) message body as a JSON-ready dict."""
    if not dataclasses.is_dataclass(message) or isinstance(message, type):
        return {}
    out: dict[str, Any] = {}
    for f in dataclasses.fields(message):
        name = f.name
        value = getattr(message, name)
        if name in ("cert_data", "certificate", "challenge") and isinstance(value, (bytes, bytearray)):
            out[f"{name}_length"] = len(value)
            continue
        if name == "extensions":
            out[name] = [extension_dict(e) for e in value]
        elif name == "entries":
            out[name] = [_entry(e) for e in value]
        elif name == "cipher_specs":
            out[name] = [ssl2_spec_name(v) for v in value]
        elif name == "algorithm":
            fn = (reg.certificate_compression_algorithm_name if isinstance(message, m.CompressedCertificate)
                  else reg.signature_scheme_name)
            out[name] = None if value is None else fn(value)
        elif name == "version" and isinstance(value, int):
            out[name] = reg.version_name(value)
        elif name in _FIELD_NAMES and value is not None:
            out[name] = _names(_FIELD_NAMES[name], value)
        else:
            out[name] = jsonable(value)
    if isinstance(message, m.ClientHello):
        out["server_name"] = message.server_name
    if isinstance(message, m.ServerHello):
        out["selected_version"] = reg.version_name(message.selected_version)
    return out


def _entry(entry: m.CertificateEntry) -> dict[str, Any]:
    out = certificate_brief(entry.info)
    out["length"] = len(entry.cert_data)
    if entry.extensions:
        out["extensions"] = [extension_dict(e) for e in entry.extensions]
    return out


def sslv2_name(msg_type: int | None) -> str:
    if msg_type is None:
        return "SSLv2 record"
    return SSLV2_NAMES.get(msg_type, f"SSLv2 unknown({msg_type})")
