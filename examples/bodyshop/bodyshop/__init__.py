"""bodyshop: repair jobs for car-repair shops, moving through stages."""

from bodyshop._version import FEATURES, VERSION

STAGES = ("received", "estimate", "repair", "paint", "ready", "collected")

__all__ = ["FEATURES", "STAGES", "VERSION"]
