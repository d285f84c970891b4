"""Sans-IO analysis of decoded TLS traffic: tracking, findings and diagnosis."""
