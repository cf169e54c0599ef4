# Overwritten by build.py for each release; the source tree itself runs as the newest one.
VERSION = "1.1.0"
FEATURES = frozenset({"estimate"})
