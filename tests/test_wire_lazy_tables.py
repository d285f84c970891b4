"""Tables built on first use instead of at import, and the key_share decoder that skips keys:
the results must be what the eager code gave."""

from __future__ import annotations

from tlsproxy.wire import extensions as ext
from tlsproxy.wire.registry import ALL_CIPHER_SUITES, cipher_suite_info, parse_suite_name
from tlsproxy.wire.registry import suite_info


def test_cipher_suite_info_parses_each_known_suite_once_and_equal_to_the_name():
    for value, name in ALL_CIPHER_SUITES.items():
        info = cipher_suite_info(value)
        assert info == parse_suite_name(name)
        assert cipher_suite_info(value) is info  # kept: later lookups are a dict hit


def test_cipher_suite_info_is_none_for_unknown_and_grease():
    assert cipher_suite_info(0x0A0A) is None
    assert cipher_suite_info(0xFFFE) is None
    assert 0x0A0A not in suite_info._parsed  # misses are not stored: the memo stays bounded by the table


def test_suite_info_table_is_still_available_and_complete():
    table = suite_info.SUITE_INFO  # built on first access (no module reload: others hold its functions)
    assert list(table) == list(ALL_CIPHER_SUITES)
    assert all(table[v] == parse_suite_name(n) for v, n in ALL_CIPHER_SUITES.items())


def _client_key_share(*shares: tuple[int, bytes]) -> bytes:
    body = b"".join(g.to_bytes(2, "big") + len(k).to_bytes(2, "big") + k for g, k in shares)
    return len(body).to_bytes(2, "big") + body


def test_key_share_keeps_group_and_length_of_each_share():
    data = _client_key_share((0x11EC, b"\x01" * 1216), (0x001D, b"\x02" * 32))
    e = ext.decode_extension(ext.KEY_SHARE, data, ext.CLIENT_HELLO)
    assert e.error is None
    assert [(s.group, s.key_exchange_length) for s in e.value] == [(0x11EC, 1216), (0x001D, 32)]
    server = ext.decode_extension(ext.KEY_SHARE, b"\x00\x1d\x00\x20" + b"\x03" * 32, ext.SERVER_HELLO)
    assert (server.value.group, server.value.key_exchange_length) == (0x001D, 32)


def test_truncated_key_share_names_the_key_exchange_field():
    data = _client_key_share((0x001D, b"\x02" * 32))[:-1]
    data = (len(data) - 2 + 1).to_bytes(2, "big") + data[2:]  # the list claims the missing byte
    e = ext.decode_extension(ext.KEY_SHARE, data, ext.CLIENT_HELLO)
    assert e.value is None and e.error is not None and "client_shares" in e.error
    inner = b"\x00\x1d\x00\x20" + b"\x02" * 31
    e = ext.decode_extension(ext.KEY_SHARE, len(inner).to_bytes(2, "big") + inner, ext.CLIENT_HELLO)
    assert e.error == "key_exchange at offset 6: needs 32 bytes, 31 left"
    e = ext.decode_extension(ext.KEY_SHARE, b"\x00\x1d\x00\x20" + b"\x03" * 31, ext.SERVER_HELLO)
    assert e.error == "key_exchange at offset 4: needs 32 bytes, 31 left"
