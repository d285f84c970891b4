"""tlsproxy: a transparent, TLS-aware intercepting proxy that explains failing handshakes."""

__version__ = "0.1.0"
