"""Gene selection across sections and the expression measured beside predictions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import _logging as log
from .._errors import GeneMismatchError, InputError
from .._spots import Spots
from ._registry import Registry

__all__ = ["measured_expression", "select_genes", "shared_variable_genes"]


def select_genes(tables: Sequence[Any], genes: Sequence[str] | None = None, *, n_top_genes: int | None = None,
                 layer: str | None = None) -> list[str]:
    """Genes measured in every table: the given ones (checked), or the most variable of the pooled tables.

    Parameters
    ----------
    tables
        AnnData tables of raw counts (the reference sections).
    genes
        Use exactly these genes; each must be measured in every table.
    n_top_genes
        Without ``genes``: keep this many highly variable genes of the tables pooled on their shared
        genes (library size 1e4, log1p, scanpy's "seurat" dispersion); ``None``: every shared gene.
    layer
        Counts layer instead of ``X``.

    Returns
    -------
    The gene names, in order.

    Examples
    --------
    >>> import stfuse as sf
    >>> from stfuse.data import select_genes
    >>> a = sf.datasets.toy(n_spots=100, seed=0).tables["table"]
    >>> b = sf.datasets.toy(n_spots=100, seed=1).tables["table"]
    >>> len(select_genes([a, b[:, :70]], n_top_genes=20)), select_genes([a], ["G001", "G002"])
    (20, ['G001', 'G002'])
    """
    from ..pp import common_genes, prepare_expression

    if genes is not None:
        genes = [str(g) for g in genes]
        if len(set(genes)) != len(genes):
            raise InputError("genes contains duplicates; give each gene once.")
        if not genes:
            raise InputError("genes is empty; give at least one gene, or genes=None to choose variable genes.")
        for i, t in enumerate(tables):
            missing = [g for g in genes if g not in t.var_names]
            if missing:
                raise GeneMismatchError(
                    f"{len(missing)} of the {len(genes)} requested genes are not measured in reference {i} "
                    f"(first: {missing[:8]}). Pass genes measured in every reference, e.g. "
                    "sf.pp.common_genes(*tables)."
                )
        return genes
    import anndata as ad

    shared = common_genes(*tables)
    if not shared:
        raise GeneMismatchError("The references share no gene; they must be measured on overlapping gene panels.")
    if len(tables) == 1:
        merged = tables[0][:, shared] if len(shared) < tables[0].n_vars else tables[0]
    else:
        merged = ad.concat([t[:, shared] for t in tables], join="inner", index_unique="-")
    if n_top_genes is None or n_top_genes >= len(shared):
        return list(shared)
    return prepare_expression(merged, layer=layer, n_top_genes=int(n_top_genes)).genes


def shared_variable_genes(references: Sequence[Any], target: Any, *, n_top_genes: int, layer: str | None = None,
                          names: Sequence[str] = (), target_name: str = "target") -> list[str]:
    """Genes shared by the references and the target, then the references' variable genes (batch-aware).

    Each reference is normalised on its own and the highly variable genes are ranked with one
    batch per reference (:func:`stfuse.pp.shared_hvg`), so a gene variable in many sections
    ranks first.

    Parameters
    ----------
    references
        AnnData tables of raw counts of the training sections.
    target
        AnnData table of the section the model will be applied to.
    n_top_genes
        Number of variable genes to keep.
    layer
        Counts layer instead of ``X``.
    names, target_name
        Names of the sections, for messages.

    Returns
    -------
    The gene names, in the order of the first reference.

    Examples
    --------
    >>> import stfuse as sf
    >>> from stfuse.data import shared_variable_genes
    >>> t = sf.datasets.toy(n_spots=100).tables["table"]
    >>> genes = shared_variable_genes([t[:, :70]], t, n_top_genes=30)
    >>> len(genes), set(genes) <= set(t.var_names[:70])
    (30, True)
    """
    from ..pp import common_genes, shared_hvg

    shared = common_genes(*references, target)
    if not shared:
        raise GeneMismatchError(
            f"The references {list(names)} and the target {target_name!r} share no gene name. Check that all use the "
            "same gene identifiers (symbols vs Ensembl ids) in var_names."
        )
    genes = shared_hvg(*references, genes=shared, n_top_genes=n_top_genes, layer=layer)
    log.info(f"{len(shared)} genes shared by {len(references)} reference(s) and the target; "
             f"{len(genes)} highly variable genes used")
    return genes


def measured_expression(spots: Spots, registry: Registry, *, layer: str | None = None) -> np.ndarray | None:
    """The section's measured expression of the registry's genes, normalised like the training targets.

    ``None`` when there is nothing to compare predictions with: spots without a table of their own
    (e.g. tissue tiles), a table without all the genes (or without ``layer``), or counts that cannot
    be normalised (NaN, negative, empty spots).

    Examples
    --------
    >>> import stfuse as sf
    >>> from stfuse._spots import get_spots
    >>> from stfuse.data import Registry, measured_expression
    >>> reg = Registry("histospace", genes=["G001"], normalisation={"target_sum": 1e4, "log1p": True})
    >>> measured_expression(get_spots(sf.datasets.toy(n_spots=100)), reg).shape
    (100, 1)
    """
    table = spots.table
    if (not spots.table_in_data or table.n_vars == 0 or registry.genes is None
            or any(g not in table.var_names for g in registry.genes)
            or (layer is not None and layer not in table.layers)):
        return None
    try:
        return registry.expression(table, layer=layer)
    except InputError as err:
        log.info(f"the measured expression of {spots.name!r} is not written beside the predictions: {err}")
        return None
