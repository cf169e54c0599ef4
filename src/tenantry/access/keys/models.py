"""Tables of this package (none yet)."""
