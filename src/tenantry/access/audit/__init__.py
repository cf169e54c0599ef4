"""The tamper-evident audit log: HMAC-chained entries, signed heads shipped offsite."""
