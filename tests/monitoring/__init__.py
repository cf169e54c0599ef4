"""Tests of the monitoring domain (notification channels against real servers on loopback)."""
