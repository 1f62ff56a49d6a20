"""Data preparation: the floor between the Spots view and the models (``sf.tl`` calls it, models get arrays)."""

from ._single import PCBlocks, SingleSection, image_block, pca, prepare_pcs, prepare_section, standardise

__all__ = ["PCBlocks", "SingleSection", "image_block", "pca", "prepare_pcs", "prepare_section", "standardise"]
