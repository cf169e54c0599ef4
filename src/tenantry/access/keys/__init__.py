"""Secrets at rest (envelope encryption under the master key) and site certificates."""
