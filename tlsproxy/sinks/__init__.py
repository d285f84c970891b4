"""Sinks: what the core produced, rendered on screen (``console``) or kept on disk (``sessionjson``)."""
