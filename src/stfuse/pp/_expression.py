"""Expression preparation shared by the tools. Never modifies the user's table."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import sparse

from .._errors import GeneMismatchError, InputError
from .._settings import start_numba_threads

__all__ = ["Expression", "check_counts", "common_genes", "prepare_expression", "shared_hvg"]


@dataclass
class Expression:
    """Prepared expression: a dense ``(n_spots, n_genes)`` float32 matrix and its gene names."""

    X: np.ndarray
    genes: list[str]


def _matrix(table: Any, layer: str | None):
    if layer is None:
        return table.X
    if layer not in table.layers:
        raise InputError(f"No layer {layer!r} in the table; layers: {list(table.layers)}.")
    return table.layers[layer]


def check_counts(table: Any, *, layer: str | None = None, name: str = "table") -> None:
    """Refuse count matrices that no tool can use: NaN/inf, negative values, empty spots.

    Parameters
    ----------
    table
        An AnnData whose ``X`` (or ``layers[layer]``) holds counts.
    layer
        Layer to check instead of ``X``.
    name
        Name used in the error message.

    Examples
    --------
    >>> import stfuse as sf
    >>> sdata = sf.datasets.toy(n_spots=100)
    >>> sf.pp.check_counts(sdata.tables["table"])
    """
    X = _matrix(table, layer)
    if X is None:
        raise InputError(f"The {name} has no expression matrix (X is None).")
    if table.n_vars == 0:
        raise InputError(f"The {name} has no genes.")
    data = X.data if sparse.issparse(X) else np.asarray(X)
    if not np.issubdtype(data.dtype, np.number):
        raise InputError(f"The {name}'s expression matrix is not numeric (dtype {data.dtype}).")
    if not np.isfinite(data).all():
        raise InputError(f"The {name}'s expression matrix contains NaN or infinite values; fix or drop them.")
    if (data < 0).any():
        raise InputError(
            f"The {name}'s expression matrix has negative values; stfuse expects raw counts (>= 0). "
            "Pass the counts layer with layer=... if X holds scaled data."
        )
    totals = np.asarray(X.sum(axis=1)).ravel()
    if (totals <= 0).any():
        raise InputError(
            f"{int((totals <= 0).sum())} spots of the {name} have no counts at all; remove them first, e.g. "
            "`sc.pp.filter_cells(table, min_counts=1)` on a copy of the table."
        )
    if table.obs_names.has_duplicates:
        raise InputError(f"The {name} has duplicated spot names; make them unique (table.obs_names_make_unique()).")
    if table.var_names.has_duplicates:
        raise InputError(f"The {name} has duplicated gene names; make them unique (table.var_names_make_unique()).")


def common_genes(*tables: Any) -> list[str]:
    """Genes present in every table, in the order of the first.

    Examples
    --------
    >>> import stfuse as sf
    >>> a = sf.datasets.toy(n_spots=100).tables["table"]
    >>> len(sf.pp.common_genes(a, a[:, :70]))
    70
    """
    if not tables:
        return []
    keep = pd.Index(tables[0].var_names)
    for t in tables[1:]:
        keep = keep[keep.isin(t.var_names)]
    return keep.tolist()


def prepare_expression(
    table: Any,
    *,
    genes: Sequence[str] | None = None,
    layer: str | None = None,
    min_counts: int = 0,
    target_sum: float | None = 1e4,
    log1p: bool = True,
    n_top_genes: int | None = None,
    flavor: Literal["seurat", "cell_ranger", "seurat_v3"] = "seurat",
    scale: bool | Literal["standard", "minmax"] = False,
    max_value: float | None = None,
) -> Expression:
    """Filter, normalise, log-transform and select genes on a copy of ``table``.

    Parameters
    ----------
    table
        AnnData with raw counts.
    genes
        Use exactly these genes (in this order; missing ones raise). Skips filtering and HVG.
    layer
        Counts layer instead of ``X``.
    min_counts
        Drop genes with fewer total counts (SENCA-st drops < 10).
    target_sum
        Library-size normalisation target (``None``: skip).
    log1p
        Apply ``log1p``.
    n_top_genes
        Keep this many highly variable genes (:func:`scanpy.pp.highly_variable_genes` with ``flavor``;
        "seurat" ranks by normalised dispersion).
    flavor
        HVG flavour.
    scale
        ``True`` or ``"standard"``: each gene to zero mean and unit variance (clipped at ``max_value``).
        ``"minmax"``: each gene to [0, 1] over the spots of this table (SpaCRD's per-section scaling;
        constant genes become 0).
    max_value
        Clip after standard scaling.

    Returns
    -------
    :class:`Expression` with a dense float32 matrix.

    Examples
    --------
    >>> import stfuse as sf
    >>> t = sf.datasets.toy(n_spots=100).tables["table"]
    >>> sf.pp.prepare_expression(t, n_top_genes=50).X.shape
    (100, 50)
    """
    import anndata as ad
    import scanpy as sc

    check_counts(table, layer=layer)
    X = _matrix(table, layer)
    X = X.astype(np.float32, copy=True).tocsr() if sparse.issparse(X) else sparse.csr_matrix(np.asarray(X, np.float32))
    a = ad.AnnData(X=X, var=pd.DataFrame(index=table.var_names.copy()))
    if genes is None and min_counts > 0:
        keep = np.asarray(a.X.sum(axis=0)).ravel() >= min_counts
        if keep.sum() == 0:
            raise InputError(f"No gene has at least {min_counts} counts.")
        a = a[:, keep].copy()
    counts = a.copy() if (genes is None and n_top_genes and flavor == "seurat_v3") else None
    # library size over all genes of the table, then select: the same spot gets the same values
    # whether genes are chosen by HVG here or given explicitly (a saved model's genes)
    start_numba_threads()  # before scanpy's numba kernels, which would start the pool unguarded
    if target_sum is not None:
        sc.pp.normalize_total(a, target_sum=target_sum)
    if log1p:
        sc.pp.log1p(a)
    if genes is not None:
        missing = [g for g in genes if g not in a.var_names]
        if missing:
            raise GeneMismatchError(
                f"{len(missing)} of {len(genes)} required genes are absent from the table (first: {missing[:5]})."
            )
        a = a[:, list(genes)].copy()
    elif n_top_genes is not None and n_top_genes < a.n_vars:
        if flavor == "seurat_v3":
            sc.pp.highly_variable_genes(counts, n_top_genes=n_top_genes, flavor="seurat_v3")
            hv = counts.var["highly_variable"].to_numpy()
        else:
            sc.pp.highly_variable_genes(a, n_top_genes=n_top_genes, flavor=flavor)
            hv = a.var["highly_variable"].to_numpy()
        a = a[:, hv].copy()
    dense = np.asarray(a.X.toarray() if sparse.issparse(a.X) else a.X, dtype=np.float32)
    if scale not in (False, True, "standard", "minmax"):
        raise InputError(f"scale must be False, True, 'standard' or 'minmax', got {scale!r}.")
    if scale == "minmax":
        lo = dense.min(axis=0)
        span = dense.max(axis=0) - lo
        span[span == 0] = np.inf
        dense = (dense - lo) / span
    elif scale:
        mu = dense.mean(axis=0)
        sd = dense.std(axis=0)
        sd[sd == 0] = 1.0
        dense = (dense - mu) / sd
        if max_value is not None:
            np.clip(dense, -max_value, max_value, out=dense)
    return Expression(X=dense, genes=a.var_names.tolist())


def shared_hvg(
    *tables: Any,
    genes: Sequence[str] | None = None,
    n_top_genes: int = 3000,
    layer: str | None = None,
    target_sum: float | None = 1e4,
    flavor: Literal["seurat", "cell_ranger"] = "seurat",
) -> list[str]:
    """Highly variable genes of several sections taken together (e.g. the reference sections of a model).

    Each table is normalised on its own (library size over all its genes, ``log1p``), the tables are
    stacked on ``genes`` and :func:`scanpy.pp.highly_variable_genes` runs with one batch per table, so
    genes variable in many sections rank first and a section-specific shift is not mistaken for
    variability.

    Parameters
    ----------
    *tables
        AnnData tables with raw counts.
    genes
        Candidate genes (default: :func:`common_genes` of the tables).
    n_top_genes
        Number of genes to keep; all candidates are returned when there are fewer.
    layer
        Counts layer instead of ``X``.
    target_sum
        Library-size normalisation target (``None``: skip).
    flavor
        HVG flavour on log data (``"seurat"``: normalised dispersion).

    Returns
    -------
    The selected gene names, in the order of ``genes``.

    Examples
    --------
    >>> import stfuse as sf
    >>> a = sf.datasets.toy(n_spots=100, seed=0).tables["table"]
    >>> b = sf.datasets.toy(n_spots=100, seed=1).tables["table"]
    >>> len(sf.pp.shared_hvg(a, b, n_top_genes=40))
    40
    """
    import anndata as ad
    import scanpy as sc

    if not tables:
        raise InputError("shared_hvg needs at least one table.")
    genes = common_genes(*tables) if genes is None else list(genes)
    if not genes:
        raise GeneMismatchError("The tables share no gene.")
    parts = []
    for i, t in enumerate(tables):
        e = prepare_expression(t, genes=genes, layer=layer, target_sum=target_sum, log1p=True)
        parts.append(ad.AnnData(X=e.X, obs=pd.DataFrame({"batch": str(i)}, index=[f"{i}_{j}" for j in range(len(e.X))])))
    if n_top_genes >= len(genes):
        return list(genes)
    a = ad.concat(parts, index_unique=None)
    a.var_names = genes
    sc.pp.highly_variable_genes(a, n_top_genes=int(n_top_genes), flavor=flavor,
                                batch_key="batch" if len(tables) > 1 else None)
    hv = a.var["highly_variable"].to_numpy()
    return [g for g, keep in zip(genes, hv) if keep]
