"""Monitoring: the check catalog, the Prometheus stack that evaluates it, and the channels
that notify people (not yet a domain of tenantry.app: the wiring comes next)."""
