"""Datasets: ``sf.datasets``."""

from ._her2st import her2st, her2st_path, her2st_sections
from ._toy import toy

__all__ = ["her2st", "her2st_path", "her2st_sections", "toy"]
