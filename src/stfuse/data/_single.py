"""Single-section data preparation: expression, spot graph and image features of one section.

The floor between the Spots view and the models for the tools that work on one section at a time
(``sf.tl.senca``, ``sf.tl.stmic``): everything here reads the user's object and writes nothing.
Each preparation also says which inputs it used (``inputs``), which the tool records in
``uns[key_added]["inputs"]``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from .._errors import InputError
from .._spots import Spots
from ..gr import neighbours_from_graph
from ..im import ImageFeatures, image_features
from ..im._encoders import DEFAULT_ENCODER
from ..pp import check_counts, prepare_expression
from ._neighbours import neighbour_index

__all__ = [
    "PCBlocks", "SingleSection", "graph_rule", "image_block", "pca", "prepare_pcs", "prepare_section", "spot_graph",
    "standardise",
]


def _graph_input(n_neighs: int, on: str) -> dict[str, Any]:
    """How a k-nearest-neighbour graph was built, as recorded in ``uns[key]["inputs"]["graph"]``."""
    return {"kind": "knn", "n_neighs": int(n_neighs), "on": on}


def spot_graph(spots: Spots, *, n_neighs: int, connectivity_key: str | None = None,
               by_distance: bool = False) -> tuple[np.ndarray, dict[str, Any]]:
    """The spot graph as a neighbour array: ``obsp[connectivity_key]`` when the table has it, else a kNN graph.

    Returns the ``(n_obs, k)`` neighbour array (``-1`` padded) and how it was made (recorded in
    ``uns[key]["inputs"]["graph"]``). An ``obsp`` graph gives every spot all the spots it links to, in
    increasing order (``by_distance=True``: nearest first, ties by index, the order of the kNN graph, so
    an ``obsp`` graph holding the kNN graph gives the same array), padded with ``-1`` to the largest
    degree (:func:`stfuse.gr.neighbours_from_graph`; ``k`` is that degree, ``n_neighs`` is not used); a graph of another shape than ``(n_obs, n_obs)``
    or without edges raises :class:`~stfuse.InputError`. The kNN graph links every spot to its
    ``n_neighs`` nearest spots (:func:`neighbour_index`, ``-1`` where the section has fewer).

    Examples
    --------
    >>> import stfuse as sf
    >>> from stfuse._spots import get_spots
    >>> from stfuse.data import spot_graph
    >>> sdata = sf.datasets.toy(n_spots=100, image=False)
    >>> nbr, how = spot_graph(get_spots(sdata), n_neighs=4, connectivity_key="spatial_connectivities")
    >>> nbr.shape, how["kind"]
    ((100, 4), 'knn')
    >>> sf.gr.spatial_graph(sdata, n_neighs=6, coord_type="generic")
    >>> nbr, how = spot_graph(get_spots(sdata), n_neighs=4, connectivity_key="spatial_connectivities")
    >>> how["kind"], how["key"]
    ('obsp', 'spatial_connectivities')
    """
    obsp = spots.table.obsp
    if connectivity_key is not None and connectivity_key in obsp:
        g = obsp[connectivity_key]
        if g.shape != (spots.n_obs, spots.n_obs):
            raise InputError(f"obsp[{connectivity_key!r}] has shape {g.shape}, expected ({spots.n_obs}, {spots.n_obs}); "
                             "rebuild it for this table (e.g. sf.gr.spatial_graph) or pass connectivity_key=None.")
        nbr = neighbours_from_graph(g)
        if (nbr < 0).all():
            raise InputError(f"obsp[{connectivity_key!r}] has no edges; rebuild it or pass connectivity_key=None "
                             "to use a k-nearest-neighbour graph.")
        how = {"kind": "obsp", "key": connectivity_key, "max_degree": int(nbr.shape[1])}
        if by_distance:
            nbr, how["order"] = _nearest_first(nbr, spots.centers), "distance"
        return nbr, how
    return neighbour_index(spots.centers, int(n_neighs)), _graph_input(n_neighs, "spot centres")


def _nearest_first(nbr: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Each row of ``nbr`` sorted by squared distance to its spot, ties by index, ``-1`` last (as :func:`stfuse.gr.knn`)."""
    xy = np.asarray(centers, dtype=np.float64)
    ok = nbr >= 0
    j = np.where(ok, nbr, 0)
    dx, dy = xy[j, 0] - xy[:, None, 0], xy[j, 1] - xy[:, None, 1]
    d = np.where(ok, dx * dx + dy * dy, np.inf)
    order = np.lexsort((np.where(ok, nbr, np.iinfo(np.int64).max), d), axis=-1)
    return np.take_along_axis(nbr, order, axis=1)


def graph_rule(sections: Sequence[Spots], *, n_neighs: int, connectivity_key: str | None) -> dict[str, Any]:
    """The neighbourhood rule of a model trained on ``sections`` (saved as :attr:`Registry.graph`).

    ``{"method": "obsp", "connectivity_key": ..., "n_neighs": ...}`` when ``connectivity_key`` is set
    and the table of at least one of ``sections`` has that ``obsp`` graph: every section the model sees
    then uses its own ``obsp[connectivity_key]``, or the kNN graph of ``n_neighs`` where it has none.
    Otherwise ``{"method": "knn", "n_neighs": ...}``: every section, also later ones that have an
    ``obsp`` graph, uses the kNN graph (a model trained on kNN graphs keeps them). Re-applied by
    :meth:`Registry.neighbours`.

    Examples
    --------
    >>> import stfuse as sf
    >>> from stfuse._spots import get_spots
    >>> from stfuse.data import graph_rule
    >>> sdata = sf.datasets.toy(n_spots=100, image=False)
    >>> graph_rule([get_spots(sdata)], n_neighs=6, connectivity_key="spatial_connectivities")
    {'method': 'knn', 'n_neighs': 6}
    >>> sf.gr.spatial_graph(sdata, n_neighs=6, coord_type="generic")
    >>> graph_rule([get_spots(sdata)], n_neighs=6, connectivity_key="spatial_connectivities")["method"]
    'obsp'
    """
    if connectivity_key is not None and any(connectivity_key in s.table.obsp for s in sections):
        return {"method": "obsp", "connectivity_key": str(connectivity_key), "n_neighs": int(n_neighs)}
    return {"method": "knn", "n_neighs": int(n_neighs)}


class _Prepared:
    """What every preparation offers the writer: the image features it computed (not taken from the cache)."""

    features: ImageFeatures | None

    @property
    def new_embeddings(self) -> list[ImageFeatures]:
        """Image features computed during preparation (to store in the embedding cache), else ``[]``."""
        return [self.features] if self.features is not None and not self.features.cached else []


@dataclass(eq=False)
class SingleSection(_Prepared):
    """One section prepared for a model: expression, neighbour arrays and image features.

    Attributes
    ----------
    X
        ``(n_obs, n_genes)`` prepared expression (float32).
    genes
        Names of the columns of :attr:`X`.
    nbr
        ``(n_obs, n_neighs)`` indices of each spot's nearest spots.
    F
        ``(n_obs, d)`` image features, or ``None`` for the gene-only model.
    features
        The :class:`stfuse.im.ImageFeatures` behind :attr:`F` when an encoder ran (or its cache was
        reused); ``None`` when :attr:`F` came from ``obsm`` as given or there is no image.
    inputs
        Which inputs were used: ``image_features`` (the ``obsm`` key of :attr:`F`) and ``graph``.
    """

    X: np.ndarray
    genes: list[str]
    nbr: np.ndarray
    F: np.ndarray | None = None
    features: ImageFeatures | None = None
    inputs: dict[str, Any] = field(default_factory=dict)


def image_block(
    spots: Spots,
    *,
    image_rep: str | None = None,
    encoder: str | Callable | Any = DEFAULT_ENCODER,
    size: float | None = None,
    size_px: float | None = None,
    weights: str | os.PathLike | None = None,
    batch_size: int = 64,
    device: str = "auto",
    stain: Any = None,
) -> tuple[np.ndarray, ImageFeatures | None, str]:
    """Image features of every spot: ``obsm[image_rep]`` as given, else from ``encoder`` (cached in ``obsm``).

    Returns ``(F, features, obsm_key)``; ``features`` is ``None`` for ``image_rep``.

    Examples
    --------
    >>> import stfuse as sf
    >>> from stfuse._spots import get_spots
    >>> from stfuse.data import image_block
    >>> sdata = sf.datasets.toy(n_spots=50)
    >>> sdata.tables["table"].obsm["X_mine"] = sdata.tables["table"].obsm["spatial"] * 1.0
    >>> F, feats, key = image_block(get_spots(sdata), image_rep="X_mine")
    >>> F.shape, feats, key
    ((50, 2), None, 'X_mine')
    """
    if image_rep is not None:
        F = np.asarray(spots.table.obsm[image_rep], dtype=np.float32)
        if F.ndim != 2 or F.shape[0] != spots.n_obs or not np.isfinite(F).all():
            raise InputError(f"obsm[{image_rep!r}] must be a finite (n_spots, n_features) array; got shape {F.shape}.")
        return F, None, image_rep
    feats = image_features(spots, encoder, size=size, size_px=size_px, weights=weights, batch_size=batch_size,
                           device=device, stain=stain)
    return feats.X, feats, feats.obsm_key


def prepare_section(
    spots: Spots,
    *,
    n_neighs: int,
    connectivity_key: str | None = None,
    layer: str | None = None,
    min_counts: int = 10,
    n_top_genes: int | None = 500,
    genes: Sequence[str] | None = None,
    image: bool = True,
    image_rep: str | None = None,
    encoder: str | Callable | Any = DEFAULT_ENCODER,
    patch_spacings: float = 3.0,
    weights: str | os.PathLike | None = None,
    device: str = "auto",
) -> SingleSection:
    """Prepare one section for a spot-graph model (SENCA): expression, kNN neighbour arrays, image features.

    Genes with fewer than ``min_counts`` counts are dropped, counts normalised and log-transformed and
    the ``n_top_genes`` most variable genes (scanpy flavour ``"seurat"``) kept; the spot graph is
    ``obsp[connectivity_key]`` when the table has it, else every spot is linked to its ``n_neighs``
    nearest spots (:func:`spot_graph`); image features are ``obsm[image_rep]``, or those of a square
    patch of ``patch_spacings`` spot spacings around each spot (``image=True``), or none.

    With ``genes`` (a trained model's genes, in its order) no genes are chosen here: the library size
    is computed over the genes with at least ``min_counts`` counts and over ``genes`` (on the section
    the genes were chosen on, exactly the genes the library size was computed over there), and the
    columns are ``genes`` in their order (missing ones raise :class:`~stfuse.GeneMismatchError`).

    Examples
    --------
    >>> import stfuse as sf
    >>> from stfuse._spots import get_spots
    >>> from stfuse.data import prepare_section
    >>> sec = prepare_section(get_spots(sf.datasets.toy(n_spots=100, image=False)), n_neighs=4, image=False)
    >>> sec.nbr.shape, sec.F is None, sec.inputs["graph"]["n_neighs"]
    ((100, 4), True, 4)
    """
    check_counts(spots.table, layer=layer, name=f"table of section {spots.name!r}")
    if genes is None:
        expr = prepare_expression(spots.table, layer=layer, min_counts=int(min_counts), n_top_genes=n_top_genes,
                                  flavor="seurat")
    else:
        t = spots.table
        counts = t.X if layer is None else t.layers[layer]
        keep = (np.asarray(counts.sum(axis=0)).ravel() >= int(min_counts)) | t.var_names.isin(list(genes))
        expr = prepare_expression(t[:, keep], genes=list(genes), layer=layer)
    nbr, graph = spot_graph(spots, n_neighs=n_neighs, connectivity_key=connectivity_key)
    F, feats, key = None, None, None
    if image_rep is not None or image:
        size_px = None if image_rep is not None else float(patch_spacings) * spots.spacing()
        F, feats, key = image_block(spots, image_rep=image_rep, encoder=encoder, size_px=size_px, weights=weights,
                                    device=device)
    inputs = {"image_features": key, "graph": graph}
    return SingleSection(expr.X, list(expr.genes), nbr, F, feats, inputs)


# --- principal components (stMIC) -----------------------------------------------------------------
def pca(X: np.ndarray, n_pcs: int, random_state: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Scores ``(n, n_pcs)`` and explained variance ratios of a centred PCA (deterministic for a seed).

    Up to 4000 spots or features the PCA is exact, through the eigenvectors of the smaller Gram or
    covariance matrix (a wide SVD of a few hundred spots x 15 000 genes is slow in LAPACK); larger
    problems use scikit-learn's randomized PCA seeded with ``random_state``. Each component's sign is
    fixed so that its largest score is positive.

    Examples
    --------
    >>> import numpy as np
    >>> from stfuse.data import pca
    >>> Z, ratio = pca(np.random.default_rng(0).normal(size=(30, 5)), 2)
    >>> Z.shape, bool(ratio[0] >= ratio[1])
    ((30, 2), True)
    """
    X = np.asarray(X, dtype=np.float64)
    Xc = X - X.mean(axis=0)
    n, p = Xc.shape
    total = float((Xc * Xc).sum())
    if min(n, p) <= 4000:
        if n <= p:
            w, V = np.linalg.eigh(Xc @ Xc.T)
            top = np.argsort(w)[::-1][:n_pcs]
            Z = V[:, top] * np.sqrt(np.clip(w[top], 0.0, None))
        else:
            w, W = np.linalg.eigh(Xc.T @ Xc)
            top = np.argsort(w)[::-1][:n_pcs]
            Z = Xc @ W[:, top]
        ratio = np.clip(w[top], 0.0, None) / total if total > 0 else np.zeros(len(top))
    else:
        from sklearn.decomposition import PCA

        model = PCA(n_components=n_pcs, svd_solver="randomized", random_state=random_state)
        Z = model.fit_transform(Xc)
        ratio = model.explained_variance_ratio_
    flip = np.sign(Z[np.argmax(np.abs(Z), axis=0), np.arange(Z.shape[1])])
    flip[flip == 0] = 1.0
    return Z * flip, np.asarray(ratio, dtype=np.float64)


def standardise(X: np.ndarray) -> np.ndarray:
    """Z-score every feature; constant features become 0.

    Examples
    --------
    >>> import numpy as np
    >>> from stfuse.data import standardise
    >>> standardise(np.array([[1.0, 5.0], [3.0, 5.0]])).tolist()
    [[-1.0, 0.0], [1.0, 0.0]]
    """
    X = np.asarray(X, dtype=np.float64)
    sd = X.std(axis=0)
    sd[sd == 0] = np.inf
    return (X - X.mean(axis=0)) / sd


@dataclass(eq=False)
class PCBlocks(_Prepared):
    """Principal components of expression and/or image features, concatenated (stMIC's representation).

    Attributes
    ----------
    Z
        ``(n_obs, n_blocks * n_pcs)`` concatenated PC scores (the image block times its weight).
    variance_ratio
        Explained variance ratios per block (``"expression"``, ``"image"``).
    features
        The image features behind the image block (``None`` without one).
    inputs
        Which inputs were used (``image_features``: their ``obsm`` key).
    """

    Z: np.ndarray
    variance_ratio: dict[str, list[float]]
    features: ImageFeatures | None = None
    inputs: dict[str, Any] = field(default_factory=dict)


def prepare_pcs(
    spots: Spots,
    *,
    n_pcs: int,
    modality: Literal["both", "expression", "image"] = "both",
    layer: str | None = None,
    encoder: str | Callable | Any = DEFAULT_ENCODER,
    size: float = 1.0,
    weights: str | os.PathLike | None = None,
    image_weight: float = 1.0,
    stain: Any = None,
    batch_size: int = 64,
    device: str = "auto",
    random_state: int = 0,
) -> PCBlocks:
    """``n_pcs`` principal components of expression and/or of the spots' image features (stMIC).

    Expression: counts normalised to 10⁴ per spot, ``log1p``, every gene scaled to unit variance,
    PCA. Image: features of a patch of ``size`` spot diameters around every spot, standardised, PCA,
    times ``image_weight`` (with ``modality="both"``). The blocks are concatenated as they are.

    Examples
    --------
    >>> import stfuse as sf
    >>> from stfuse._spots import get_spots
    >>> from stfuse.data import prepare_pcs
    >>> pcs = prepare_pcs(get_spots(sf.datasets.toy(n_spots=100, image=False)), n_pcs=5, modality="expression")
    >>> pcs.Z.shape, list(pcs.variance_ratio)
    ((100, 5), ['expression'])
    """
    blocks: list[np.ndarray] = []
    ratios: dict[str, list[float]] = {}
    feats = None
    if modality in ("both", "expression"):
        expr = prepare_expression(spots.table, layer=layer, target_sum=1e4, log1p=True, scale=True)
        if n_pcs > min(expr.X.shape):
            raise InputError(
                f"n_pcs={n_pcs} exceeds what {expr.X.shape[0]} spots x {expr.X.shape[1]} genes allow; lower n_pcs."
            )
        Ze, ve = pca(expr.X, n_pcs, random_state)
        blocks.append(Ze)
        ratios["expression"] = ve.astype(float).tolist()
    if modality in ("both", "image"):
        _, feats, _ = image_block(spots, encoder=encoder, size=size, weights=weights, batch_size=batch_size,
                                  device=device, stain=stain)
        if n_pcs > min(feats.X.shape):
            raise InputError(f"n_pcs={n_pcs} exceeds the {feats.X.shape[1]} image features; lower n_pcs.")
        Zi, vi = pca(standardise(feats.X), n_pcs, random_state)
        blocks.append((float(image_weight) if modality == "both" else 1.0) * Zi)
        ratios["image"] = vi.astype(float).tolist()
    inputs = {"image_features": None if feats is None else feats.obsm_key}
    return PCBlocks(np.concatenate(blocks, axis=1), ratios, feats, inputs)
