"""Probes (DNS, webmail, IMAP, readiness) returning results, and the pure gate rules. No Prefect here."""
