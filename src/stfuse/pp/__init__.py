"""Expression preparation: ``sf.pp``."""

from ._expression import Expression, check_counts, common_genes, prepare_expression, shared_hvg

__all__ = ["Expression", "check_counts", "common_genes", "prepare_expression", "shared_hvg"]
