"""Operator access to hosts: an SSH certificate authority, sshd and sudo policy, firewall."""
