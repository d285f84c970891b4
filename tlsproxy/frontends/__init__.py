"""Front ends: the live relay bridge, capture files and saved sessions all feed the same pipeline."""
