"""Billing: metered end users, plans with volume tiers and commitment terms, invoices."""
