"""Support access: an ISV admin lets the provider into a hands-on platform, for hours."""
