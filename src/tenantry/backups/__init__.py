"""Backups, point-in-time recovery and disaster recovery of platforms (pgBackRest)."""
