"""Monitoring, alerting and notifications: the operator knows before the customer does."""
