"""Expression preparation: ``sf.pp``."""

from ._expression import Expression, check_counts, common_genes, prepare_expression

__all__ = ["Expression", "check_counts", "common_genes", "prepare_expression"]
