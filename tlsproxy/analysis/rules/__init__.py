"""Rules by topic.  Each module's functions take the tracker (read-only, except for the few facts
they record on it) and one event, and return findings built from the catalog."""
