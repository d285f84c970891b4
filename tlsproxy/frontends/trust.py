"""The system trust store, read for the analyzer by the front ends (the analyzer itself reads no
files: it is handed PEM bytes, or a loader it calls once, lazily)."""

from __future__ import annotations

import functools
import re
import ssl
from pathlib import Path


def load_system_trust() -> bytes | None:
    """The system's trust anchors as PEM bytes, from where OpenSSL (``ssl``) would look; None if
    there are none.  This does file IO: call it in a front end, not in the core."""
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, paths.openssl_cafile):
        if candidate and Path(candidate).is_file():
            try:
                return Path(candidate).read_bytes()
            except OSError:
                continue
    for directory in (paths.capath, paths.openssl_capath):
        if directory and Path(directory).is_dir():
            chunks = []
            for path in sorted(Path(directory).iterdir()):
                if path.suffix in (".pem", ".crt") or re.fullmatch(r"[0-9a-f]{8}\.\d+", path.name):
                    try:
                        chunks.append(path.read_bytes())
                    except OSError:
                        continue
            if chunks:
                return b"\n".join(chunks)
    return None


@functools.cache
def system_trust_loader() -> bytes | None:
    """``load_system_trust`` read once per process: pass it as ``AnalysisOptions.trust_loader``."""
    return load_system_trust()
