"""Transparent mode refuses connections addressed to the proxy itself, dual-stack included."""

from tlsproxy.relay.pump import _same_endpoint


def test_ipv4_mapped_listener_address_matches_the_plain_ipv4_destination():
    # A [::] listener reports ::ffff:127.0.0.1 where SO_ORIGINAL_DST gives 127.0.0.1: relaying
    # such a connection would connect the proxy to itself, again and again.
    assert _same_endpoint(("127.0.0.1", 15001), ("::ffff:127.0.0.1", 15001))
    assert _same_endpoint(("::1", 15001), ("::1", 15001))


def test_other_ports_and_addresses_differ():
    assert not _same_endpoint(("127.0.0.1", 443), ("::ffff:127.0.0.1", 15001))
    assert not _same_endpoint(("10.0.0.1", 15001), ("::ffff:127.0.0.1", 15001))
    assert not _same_endpoint(("example.invalid", 1), ("127.0.0.1", 1))
