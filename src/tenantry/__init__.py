"""tenantry: a self-hosted platform that runs an ISV application as a managed SaaS."""
__version__ = "0.1.0"
