"""Monitoring: the check catalog, and the Prometheus stack that evaluates it."""
