"""H&E stain normalisation (Macenko, Reinhard), fitted once per slide and applied batch by batch."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

import numpy as np

from .. import _logging as log
from .._errors import InputError

__all__ = ["StainNormalizer", "normalize_stain"]

StainMethod = Literal["macenko", "reinhard"]

#: Background intensity: white (255) has optical density 0 and stays white after normalisation.
_IO = 255.0
#: Pixels whose optical density is below this in every channel are background (Macenko et al. 2009: β = 0.15).
_BETA = 0.15
#: Percentile of the stain-plane angles taken as the extreme stain directions (Macenko: α = 1).
_ALPHA = 1.0
#: Reference H&E stain vectors (columns: haematoxylin, eosin; rows: R, G, B optical density) and the
#: 99th-percentile stain concentrations of the reference slide, the constants used with Macenko's method
#: in the literature and its common implementations.
MACENKO_REFERENCE = {
    "stain_matrix": [[0.5626, 0.2159], [0.7201, 0.8012], [0.4062, 0.5581]],
    "max_concentration": [1.9705, 1.0308],
}
#: Reinhard target: mean and standard deviation in Ruderman's lαβ space of the colour standard of
#: Amgad et al. (2019), TCGA-A2-A3XS-DX1 (HistomicsTK's default colour-normalisation target).
REINHARD_REFERENCE = {
    "mean": [8.74108109, -0.12440419, 0.0444982],
    "std": [0.6135447, 0.10989545, 0.0286032],
}
_MIN_TISSUE_PIXELS = 500

# Ruderman et al. (1998) / Reinhard et al. (2001): RGB -> LMS (linear), log, then decorrelating rotation.
_RGB2LMS = np.array([[0.3811, 0.5783, 0.0402], [0.1967, 0.7244, 0.0782], [0.0241, 0.1288, 0.8444]])
_LMS2LAB = np.diag([1 / np.sqrt(3), 1 / np.sqrt(6), 1 / np.sqrt(2)]) @ np.array([[1, 1, 1], [1, 1, -2], [1, -1, 0]])
_LMS2RGB = np.linalg.inv(_RGB2LMS)
_LAB2LMS = np.linalg.inv(_LMS2LAB)


def _as_pixels(patches: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]]:
    """``(..., 3, h, w)`` uint8 → ``(n_pixels, 3)`` float64 RGB and the original shape."""
    a = np.asarray(patches)
    if a.ndim < 3 or a.shape[-3] != 3:
        raise InputError(
            f"Stain normalisation expects RGB patches shaped (..., 3, height, width) like PatchBatch.patches; "
            f"got shape {a.shape}. For an (height, width, 3) image pass image.transpose(2, 0, 1)."
        )
    if a.dtype != np.uint8:
        if np.issubdtype(a.dtype, np.floating) and a.size and float(np.nanmax(a)) <= 1.0:
            a = np.clip(np.rint(a * 255.0), 0, 255).astype(np.uint8)
        else:
            a = np.clip(np.rint(a), 0, 255).astype(np.uint8)
    px = np.moveaxis(a, -3, -1).reshape(-1, 3)
    return px, a.shape


def _from_pixels(px: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    out = np.clip(np.rint(px), 0, 255).astype(np.uint8)
    lead, (c, h, w) = shape[:-3], shape[-3:]
    return np.moveaxis(out.reshape(*lead, h, w, c), -1, -3)


def _optical_density(px: np.ndarray) -> np.ndarray:
    return -np.log(np.clip(px, 1.0, _IO) / _IO)


def _tissue(od: np.ndarray) -> np.ndarray:
    """Pixels that are stained tissue: optical density at least β in some channel (not background)."""
    return (od > _BETA).any(axis=1)


def _sample(px: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    if len(px) <= n:
        return px
    return px[np.random.default_rng(seed).choice(len(px), n, replace=False)]


def _macenko_fit(od: np.ndarray) -> dict[str, Any]:
    """Stain matrix (3 × 2, H then E) and 99th-percentile concentrations from tissue optical densities."""
    cov = np.cov(od, rowvar=False)
    _, vecs = np.linalg.eigh(cov)
    plane = vecs[:, [2, 1]]  # the two largest principal directions
    plane *= np.where(plane.sum(axis=0) < 0, -1.0, 1.0)  # point into positive optical density
    proj = od @ plane
    phi = np.arctan2(proj[:, 1], proj[:, 0])
    lo, hi = np.percentile(phi, [_ALPHA, 100 - _ALPHA])
    v1 = plane @ np.array([np.cos(lo), np.sin(lo)])
    v2 = plane @ np.array([np.cos(hi), np.sin(hi)])
    # haematoxylin is the vector with more red optical density (it absorbs red: blue-purple)
    he = np.column_stack([v1, v2]) if v1[0] > v2[0] else np.column_stack([v2, v1])
    he /= np.linalg.norm(he, axis=0, keepdims=True)
    conc = od @ np.linalg.pinv(he).T
    max_c = np.percentile(conc, 99, axis=0)
    if not np.all(np.isfinite(he)) or not np.all(max_c > 0):
        raise InputError("Could not estimate two stains from these patches (is it an H&E image?).")
    return {"stain_matrix": he.tolist(), "max_concentration": max_c.tolist()}


def _rgb_to_lab(px: np.ndarray) -> np.ndarray:
    lms = np.maximum(px @ _RGB2LMS.T, 1e-6)
    return np.log(lms) @ _LMS2LAB.T


def _lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    return np.exp(lab @ _LAB2LMS.T) @ _LMS2RGB.T


def _reinhard_fit(px: np.ndarray) -> dict[str, Any]:
    lab = _rgb_to_lab(px)
    return {"mean": lab.mean(axis=0).tolist(), "std": np.maximum(lab.std(axis=0), 1e-6).tolist()}


class StainNormalizer:
    """Stain normalisation fitted once (e.g. on a sample of one slide's spots) and applied to any batch.

    Normalising each patch on its own statistics would make the same tissue look different from spot
    to spot; a normaliser fitted once per slide maps the whole slide consistently to the target.

    Parameters
    ----------
    method
        ``"macenko"`` (Macenko et al. 2009: haematoxylin and eosin vectors from the optical-density
        plane, concentrations rescaled to the target's 99th percentiles) or ``"reinhard"`` (Reinhard
        et al. 2001: mean and standard deviation matched in Ruderman's lαβ colour space).
    target
        ``None``: literature reference constants (:data:`MACENKO_REFERENCE` / :data:`REINHARD_REFERENCE`);
        uint8 patches ``(..., 3, h, w)`` of a reference slide; or a fitted :class:`StainNormalizer`
        whose source statistics become the target.

    Notes
    -----
    Background is robust: white pixels (optical density below 0.15 in every channel) are ignored when
    fitting; Macenko maps them to near-white, Reinhard leaves them unchanged. A sample with fewer than
    500 tissue pixels cannot be fitted; the normaliser then leaves patches unchanged (with a warning).

    Examples
    --------
    >>> import stfuse as sf
    >>> sdata = sf.datasets.toy(n_spots=100)
    >>> sample = next(sf.im.extract_patches(sdata, out_px=32, batch_size=50)).patches
    >>> norm = sf.im.StainNormalizer("macenko").fit(sample)
    >>> norm.transform(sample).shape
    (50, 3, 32, 32)
    """

    def __init__(self, method: StainMethod = "macenko", target: Any = None) -> None:
        if method not in ("macenko", "reinhard"):
            raise InputError(f"Stain normalisation method must be 'macenko' or 'reinhard', got {method!r}.")
        self.method: StainMethod = method
        self.source: dict[str, Any] | None = None
        self.identity = False
        if target is None:
            self.target = dict(MACENKO_REFERENCE if method == "macenko" else REINHARD_REFERENCE)
            self.target_name = "reference"
        elif isinstance(target, StainNormalizer):
            if target.method != method:
                raise InputError(f"target was fitted with {target.method!r}, not {method!r}.")
            if target.source is None or target.identity:
                raise InputError("The target StainNormalizer is not fitted (or saw no tissue); call .fit(...) first.")
            self.target = dict(target.source)
            self.target_name = "custom:" + _digest(self.target)
        else:
            ref = StainNormalizer(method)
            ref.fit(target)
            if ref.identity:
                raise InputError("The target patches show no stained tissue; give patches of a reference H&E slide.")
            self.target = dict(ref.source or {})
            self.target_name = "custom:" + _digest(self.target)

    def __repr__(self) -> str:
        state = "identity" if self.identity else ("fitted" if self.source is not None else "not fitted")
        return f"StainNormalizer(method={self.method!r}, target={self.target_name!r}, {state})"

    @property
    def fitted(self) -> bool:
        """Whether :meth:`fit` has run."""
        return self.source is not None or self.identity

    def fit(self, patches: np.ndarray, *, max_pixels: int = 2_000_000, seed: int = 0) -> StainNormalizer:
        """Estimate the source stains (Macenko) or colour statistics (Reinhard) from uint8 patches.

        Parameters
        ----------
        patches
            ``(..., 3, h, w)`` uint8 RGB, e.g. a sample of one slide's spot patches.
        max_pixels
            Tissue pixels used (a fixed random subset beyond that).
        seed
            Seed of that subset.

        Returns
        -------
        ``self``, fitted.

        Examples
        --------
        >>> import numpy as np
        >>> import stfuse as sf
        >>> rng = np.random.default_rng(0)
        >>> patches = rng.integers(60, 230, (4, 3, 16, 16)).astype(np.uint8)
        >>> sf.im.StainNormalizer("reinhard").fit(patches).fitted
        True
        """
        px, _ = _as_pixels(patches)
        od = _optical_density(px)
        mask = _tissue(od)
        if int(mask.sum()) < _MIN_TISSUE_PIXELS:
            log.warning(f"stain normalisation: only {int(mask.sum())} tissue pixels to fit on; leaving colours unchanged")
            self.source, self.identity = None, True
            return self
        self.identity = False
        if self.method == "macenko":
            self.source = _macenko_fit(_sample(od[mask], max_pixels, seed))
        else:
            self.source = _reinhard_fit(_sample(px[mask], max_pixels, seed))
        return self

    def transform(self, patches: np.ndarray) -> np.ndarray:
        """Normalised copy of uint8 patches ``(..., 3, h, w)`` (same shape, uint8).

        Examples
        --------
        >>> import numpy as np
        >>> import stfuse as sf
        >>> white = np.full((2, 3, 8, 8), 255, np.uint8)
        >>> norm = sf.im.StainNormalizer("macenko")
        >>> norm.fit(white).transform(white).min()  # nothing to fit: unchanged
        np.uint8(255)
        """
        if not self.fitted:
            raise InputError("StainNormalizer is not fitted; call .fit(patches) first (or use sf.im.normalize_stain).")
        px, shape = _as_pixels(patches)
        if self.identity or px.size == 0:
            return _from_pixels(px, shape)
        src = self.source or {}
        if self.method == "macenko":
            he_src = np.asarray(src["stain_matrix"])
            he_tgt = np.asarray(self.target["stain_matrix"])
            scale = np.asarray(self.target["max_concentration"]) / np.asarray(src["max_concentration"])
            conc = _optical_density(px) @ np.linalg.pinv(he_src).T
            conc = np.maximum(conc, 0.0) * scale
            out = _IO * np.exp(-(conc @ he_tgt.T))
        else:
            lab = _rgb_to_lab(px)
            lab = (lab - np.asarray(src["mean"])) / np.asarray(src["std"])
            lab = lab * np.asarray(self.target["std"]) + np.asarray(self.target["mean"])
            out = _lab_to_rgb(lab)
            background = ~_tissue(_optical_density(px))
            out[background] = px[background]
        return _from_pixels(out, shape)

    def fit_transform(self, patches: np.ndarray) -> np.ndarray:
        """:meth:`fit` on ``patches``, then :meth:`transform` them."""
        return self.fit(patches).transform(patches)

    def provenance(self) -> dict[str, Any]:
        """What identifies this normalisation (recorded with embeddings; the cache is keyed on it)."""
        return {"stain": self.method, "stain_target": self.target_name}

    def params(self) -> dict[str, Any]:
        """Fitted source and target parameters (JSON-serialisable, no ``None``: storable in ``uns``)."""
        out = {"method": self.method, "target": self.target_name, "target_params": self.target,
               "identity": self.identity}
        if self.source is not None:
            out["source_params"] = self.source
        return out


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:12]


def normalize_stain(
    patches: np.ndarray,
    method: StainMethod = "macenko",
    target: Any = None,
    *,
    normalizer: StainNormalizer | None = None,
) -> np.ndarray:
    """Normalise the H&E staining of uint8 patches to a target.

    Without ``normalizer`` the stains are estimated from ``patches`` themselves (all of them
    together, so pass a batch from one slide); to normalise a whole slide consistently, fit a
    :class:`StainNormalizer` once on a sample of its spots and pass it, or use the ``stain=`` option
    of :func:`stfuse.im.extract_patches` / :func:`stfuse.im.embed`, which does that.

    Parameters
    ----------
    patches
        ``(..., 3, h, w)`` RGB, uint8 (or float in [0, 1]), like :attr:`PatchBatch.patches`.
    method
        ``"macenko"`` or ``"reinhard"``.
    target
        ``None`` (literature reference), reference patches, or a fitted :class:`StainNormalizer`.
    normalizer
        An already fitted :class:`StainNormalizer` to apply (``method`` and ``target`` are then ignored).

    Returns
    -------
    Normalised uint8 patches of the same shape.

    Examples
    --------
    >>> import stfuse as sf
    >>> sdata = sf.datasets.toy(n_spots=100)
    >>> batch = next(sf.im.extract_patches(sdata, out_px=32, batch_size=20))
    >>> sf.im.normalize_stain(batch.patches, method="reinhard").dtype
    dtype('uint8')
    """
    if normalizer is not None:
        return normalizer.transform(patches)
    return StainNormalizer(method, target).fit_transform(patches)
