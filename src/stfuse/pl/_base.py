"""Drawing pieces of every ``sf.pl`` plot: image, spots, colours, panel grid, scalebar.

All in level-0 image pixels (the coordinates of :attr:`stfuse._spots.Spots.centers`).
:func:`spatial_panel` is :func:`draw_image` + :func:`draw_spots` + :func:`scalebar` + title;
:func:`panels` lays out the axes. The plots themselves are assembled by :mod:`stfuse.pl._figure`
(shared parameters, the panel function, save / show / return).
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from .. import _logging as log
from .._errors import InputError, KeyNotFoundError
from .._spots import Spots

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.collections import Collection
    from matplotlib.figure import Figure

__all__ = [
    "Panels",
    "box_aspect",
    "category_colors",
    "category_order",
    "choose_level",
    "crop_box",
    "draw_image",
    "draw_spots",
    "get_values",
    "is_categorical",
    "legend_width",
    "matched_colors",
    "panels",
    "read_region",
    "scalebar",
    "spatial_panel",
]

#: level-0 crops up to this many pixels are read at full resolution and downsampled here when the
#: requested level is computed lazily from level 0 (cheaper than dask's chained coarsening)
_MAX_LEVEL0_READ_PX = 64_000_000
#: grey of spots without a value (NaN), as scanpy's ``na_color``
NA_COLOR = "lightgray"
#: nominal space for a legend / colorbar next to a panel, in inches
_COLORBAR_IN = 0.8

ValuesKind = Literal["categorical", "continuous"]


# ------------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------------
def get_values(spots: Spots, key: str, *, layer: str | None = None) -> pd.Series:
    """Values of ``key`` per spot: an ``obs`` column, else a gene (``X`` or ``layers[layer]``).

    Returns a :class:`pandas.Series` indexed like the table; categorical for categorical, string,
    object and boolean columns, float otherwise.
    """
    table = spots.table
    if key in table.obs.columns:
        s = table.obs[key]
        if is_categorical(s) and not isinstance(s.dtype, pd.CategoricalDtype):
            s = s.astype("category")
        return s
    if key in table.var_names:
        from scipy import sparse

        X = table.X if layer is None else table.layers[layer] if layer in table.layers else None
        if X is None:
            raise KeyNotFoundError(f"No layer {layer!r} in the table; layers: {list(table.layers)}.")
        col = X[:, table.var_names.get_loc(key)]
        col = col.toarray() if sparse.issparse(col) else np.asarray(col)
        return pd.Series(np.asarray(col, dtype=np.float64).ravel(), index=table.obs_names, name=key)
    cols = list(table.obs.columns)
    raise KeyNotFoundError(
        f"{key!r} is neither an obs column nor a gene of the table. obs columns: {cols}; "
        "genes are looked up in var_names."
    )


def is_categorical(values: Any) -> bool:
    """Whether ``values`` are drawn with a palette and legend (categorical/string/object/bool)."""
    dtype = getattr(values, "dtype", np.asarray(values).dtype)
    return (
        isinstance(dtype, pd.CategoricalDtype)
        or pd.api.types.is_object_dtype(dtype)
        or pd.api.types.is_string_dtype(dtype)
        or pd.api.types.is_bool_dtype(dtype)
    )


def category_order(values: pd.Series | np.ndarray) -> list[Any]:
    """Categories of ``values`` in drawing order: a categorical's own order, else the sorted unique values."""
    vals = values if isinstance(values, pd.Series) else pd.Series(np.asarray(values))
    return list((vals if isinstance(vals.dtype, pd.CategoricalDtype) else vals.astype("category")).cat.categories)


# ------------------------------------------------------------------------------------------------
# colours
# ------------------------------------------------------------------------------------------------
def _default_palette(n: int) -> list[str]:
    from scanpy.plotting import palettes

    for pal in (palettes.default_20, palettes.default_28, palettes.default_102):
        if n <= len(pal):
            return list(pal[:n])
    from matplotlib import colormaps, colors

    cmap = colormaps["hsv"]
    return [colors.to_hex(cmap(i / n)) for i in range(n)]


def category_colors(
    categories: Sequence[Any],
    *,
    palette: str | Sequence[str] | Mapping[Any, str] | None = None,
    uns_colors: Sequence[str] | None = None,
) -> dict[Any, str]:
    """Colour of each category, as scanpy chooses it.

    ``palette`` wins (a mapping, a list of colours cycled, or a matplotlib colormap name); else the
    table's ``uns[f"{key}_colors"]`` when it has one colour per category; else scanpy's default
    palettes (``default_20`` / ``default_28`` / ``default_102``).
    """
    from matplotlib import colormaps, colors

    cats = list(categories)
    if isinstance(palette, Mapping):
        missing = [c for c in cats if c not in palette and str(c) not in palette]
        if missing:
            raise InputError(f"palette has no colour for categories {missing[:5]}; give one colour per category.")
        return {c: colors.to_hex(palette[c] if c in palette else palette[str(c)]) for c in cats}
    if isinstance(palette, str):
        if palette not in colormaps:
            raise InputError(f"Unknown colormap {palette!r} for palette=; give a colormap name or a list of colours.")
        cmap = colormaps[palette]
        n = getattr(cmap, "N", 256)
        if n <= 32:  # a qualitative map (tab10, Set1, ...): take its colours in order
            return {c: colors.to_hex(cmap(i % n)) for i, c in enumerate(cats)}
        return {c: colors.to_hex(cmap(i / max(len(cats) - 1, 1))) for i, c in enumerate(cats)}
    if palette is not None:
        pal = list(palette)
        if not pal:
            raise InputError("palette is an empty list of colours.")
        return {c: colors.to_hex(pal[i % len(pal)]) for i, c in enumerate(cats)}
    if uns_colors is not None and len(uns_colors) == len(cats):
        try:
            return {c: colors.to_hex(col) for c, col in zip(cats, uns_colors)}
        except ValueError:
            pass
    return dict(zip(cats, _default_palette(len(cats))))


def matched_colors(pred: pd.Series, truth: pd.Series, truth_colors: Mapping[Any, str]) -> dict[Any, str]:
    """Colours for predicted clusters that reuse the colour of the truth class each one matches.

    Clusters and classes are paired by maximum overlap (Hungarian assignment on the contingency
    table, spots without a truth left out); unmatched clusters get the next unused default colours.
    This only changes colours, never the clusters.
    """
    from scipy.optimize import linear_sum_assignment

    pred = pred.astype("category")
    truth = truth.astype("category")
    pcats = list(pred.cat.categories)
    tcats = list(truth.cat.categories)
    ok = truth.notna().to_numpy() & pred.notna().to_numpy()
    table = pd.crosstab(pred[ok].astype(str), truth[ok].astype(str)).reindex(
        index=[str(c) for c in pcats], columns=[str(c) for c in tcats], fill_value=0
    )
    rows, cols = linear_sum_assignment(-table.to_numpy())
    out: dict[Any, str] = {}
    for r, c in zip(rows, cols):
        if table.iat[r, c] > 0:
            out[pcats[r]] = truth_colors[tcats[c]]
    used = set(out.values())
    spare = [c for c in _default_palette(len(pcats) + len(truth_colors) + 1) if c not in used]
    spare = [c for c in spare if c not in set(truth_colors.values())] + spare
    for p in pcats:
        if p not in out:
            out[p] = spare.pop(0)
    return {p: out[p] for p in pcats}


# ------------------------------------------------------------------------------------------------
# geometry of a panel
# ------------------------------------------------------------------------------------------------
def crop_box(spots: Spots, crop: bool | tuple[float, float, float, float] = True) -> tuple[float, float, float, float]:
    """``(x0, y0, x1, y1)`` in level-0 pixels shown in a panel.

    ``True``: the spots plus a margin of one spot spacing; ``False``: the whole image (the spots when
    there is none); a tuple: that box.
    """
    if isinstance(crop, tuple | list):
        if len(crop) != 4 or not (crop[2] > crop[0] and crop[3] > crop[1]):
            raise InputError(f"crop must be (x0, y0, x1, y1) with x1 > x0 and y1 > y0, got {crop!r}.")
        return tuple(float(v) for v in crop)  # type: ignore[return-value]
    if not crop and spots.has_image:
        h, w = spots.levels[0].shape_yx
        return 0.0, 0.0, float(w), float(h)
    margin = max(spots.diameter, spots.spacing() if spots.n_obs > 1 else spots.diameter)
    lo = spots.centers.min(axis=0) - margin
    hi = spots.centers.max(axis=0) + margin
    return float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])


def legend_width(values: pd.Series | np.ndarray | None, *, legend: bool = True) -> float:
    """Room in inches to leave next to a panel for its legend (categorical) or colorbar (continuous)."""
    if not legend or values is None:
        return 0.0
    if not is_categorical(values):
        return _COLORBAR_IN
    cats = pd.Series(values).astype("category").cat.categories
    longest = max([len(str(c)) for c in cats] + [2])
    ncol = 1 if len(cats) <= 14 else 2 if len(cats) <= 30 else 3
    return 0.35 + ncol * (0.3 + 0.075 * longest)


def box_aspect(box: tuple[float, float, float, float]) -> float:
    """Width / height of a crop box, clipped to [0.5, 2] for the panel layout."""
    x0, y0, x1, y1 = box
    return float(np.clip((x1 - x0) / max(y1 - y0, 1e-9), 0.5, 2.0))


def choose_level(spots: Spots, box: tuple[float, float, float, float], target_px: float) -> int:
    """Coarsest image level on which ``box`` still spans ``target_px`` pixels across its longer side."""
    side = max(box[2] - box[0], box[3] - box[1])
    best = 0
    for i, lv in enumerate(spots.levels):
        if side * lv.scale >= target_px:
            best = i
    return best


# ------------------------------------------------------------------------------------------------
# image
# ------------------------------------------------------------------------------------------------
def _is_derived(data: Any) -> bool:
    """Whether a dask level is computed from a finer level (many tasks per chunk) rather than stored."""
    try:
        return len(data.dask) > 8 * max(int(data.npartitions), 1)
    except (AttributeError, TypeError):
        return False


#: pixels read per Spots view, so the panels of one figure read the image once
_REGION_CACHE: weakref.WeakKeyDictionary[Spots, dict] = weakref.WeakKeyDictionary()


def read_region(
    spots: Spots, level: int, box: tuple[float, float, float, float]
) -> tuple[np.ndarray, tuple[float, float, float, float]] | None:
    """RGB pixels ``(h, w, 3)`` uint8 of image ``level`` covering ``box``, and their extent in level-0 pixels.

    The extent ``(left, right, bottom, top)`` is what :meth:`~matplotlib.axes.Axes.imshow` takes.
    Returns ``None`` when ``box`` lies outside the image. Results are cached on the ``spots`` object
    (all panels of one figure share one read).
    """
    cache = _REGION_CACHE.setdefault(spots, {})
    key = (int(level), tuple(float(b) for b in box))
    if key not in cache:
        cache.clear()  # keep one region per view: the pixels of one figure
        cache[key] = _read_region(spots, int(level), box)
    return cache[key]


def _read_region(
    spots: Spots, level: int, box: tuple[float, float, float, float]
) -> tuple[np.ndarray, tuple[float, float, float, float]] | None:
    if not 0 <= level < len(spots.levels):
        raise InputError(f"level must be in 0..{len(spots.levels) - 1} for section {spots.name!r}, got {level}.")
    lv = spots.levels[level]
    s = lv.scale
    h, w = lv.shape_yx
    xa, xb = max(int(np.floor(box[0] * s)), 0), min(int(np.ceil(box[2] * s)), w)
    ya, yb = max(int(np.floor(box[1] * s)), 0), min(int(np.ceil(box[3] * s)), h)
    if xb <= xa or yb <= ya:
        return None
    extent = (xa / s, xb / s, yb / s, ya / s)
    base = spots.levels[0]
    H0, W0 = base.shape_yx
    Xa, Xb = max(int(np.floor(xa / s)), 0), min(int(np.ceil(xb / s)), W0)
    Ya, Yb = max(int(np.floor(ya / s)), 0), min(int(np.ceil(yb / s)), H0)
    if level > 0 and _is_derived(lv.data) and (Xb - Xa) * (Yb - Ya) <= _MAX_LEVEL0_READ_PX:
        # same pixels as the level, without dask's chained coarsening of every finer level
        from PIL import Image

        full = base.read_rgb(Ya, Yb, Xa, Xb).transpose(1, 2, 0)
        rgb = np.asarray(Image.fromarray(np.ascontiguousarray(full)).resize((xb - xa, yb - ya), Image.Resampling.BOX))
        return rgb, (Xa, Xb, Yb, Ya)
    rgb = lv.read_rgb(ya, yb, xa, xb).transpose(1, 2, 0)
    return np.ascontiguousarray(rgb), extent


def draw_image(
    ax: Axes,
    spots: Spots,
    level: int | Literal["auto"] = "auto",
    *,
    box: tuple[float, float, float, float] | None = None,
    alpha: float = 1.0,
    dpi: float | None = None,
) -> int | None:
    """Draw the H&E image under ``ax`` (level-0 pixel coordinates); return the level used.

    ``level="auto"`` picks the coarsest level that still gives about one image pixel per screen
    pixel of the axes (at ``dpi``). Sets the axes limits to ``box``, y pointing down, equal aspect.
    Returns ``None`` (and draws nothing) when the section has no image.
    """
    box = crop_box(spots) if box is None else box
    _setup_axes(ax, box)
    if not spots.has_image:
        return None
    if level == "auto":
        fig = ax.get_figure()
        dpi = float(dpi or _dpi())
        width_in = max(fig.get_figwidth() * ax.get_position().width, fig.get_figheight() * ax.get_position().height)
        level = choose_level(spots, box, width_in * dpi)
    elif not isinstance(level, int | np.integer) or not 0 <= int(level) < len(spots.levels):
        raise InputError(
            f"level must be 'auto' or an image level in 0..{len(spots.levels) - 1} for section {spots.name!r}, "
            f"got {level!r}."
        )
    level = int(level)
    got = read_region(spots, level, box)
    if got is not None:
        rgb, extent = got
        ax.imshow(rgb, extent=extent, alpha=alpha, interpolation="antialiased", zorder=0)
        _setup_axes(ax, box)  # imshow resets the limits
    return level


def _dpi() -> float:
    import matplotlib as mpl

    d = mpl.rcParams["savefig.dpi"]
    return float(mpl.rcParams["figure.dpi"] if d == "figure" else d)


def _setup_axes(ax: Axes, box: tuple[float, float, float, float]) -> None:
    ax.set_xlim(box[0], box[2])
    ax.set_ylim(box[3], box[1])  # image rows grow downwards
    ax.set_aspect("equal")
    ax.set_anchor("W")  # spare width of the grid cell goes to the right, where the legend is
    ax.set_xticks([])
    ax.set_yticks([])
    for side in ax.spines.values():
        side.set_visible(False)


# ------------------------------------------------------------------------------------------------
# spots
# ------------------------------------------------------------------------------------------------
def _limit(values: np.ndarray, v: float | str | None, default: float) -> float:
    if v is None:
        return default
    if isinstance(v, str):
        if not v.startswith("p"):
            raise InputError(f"vmin/vmax must be a number or a percentile like 'p99', got {v!r}.")
        finite = values[np.isfinite(values)]
        return float(np.percentile(finite, float(v[1:]))) if finite.size else default
    return float(v)


def draw_spots(
    ax: Axes,
    spots: Spots,
    values: pd.Series | np.ndarray | None = None,
    *,
    kind: ValuesKind | None = None,
    palette: str | Sequence[str] | Mapping[Any, str] | None = None,
    uns_colors: Sequence[str] | None = None,
    cmap: str | Any = "viridis",
    vmin: float | str | None = None,
    vmax: float | str | None = None,
    na_color: str = NA_COLOR,
    size: float = 1.0,
    alpha: float = 1.0,
    edgecolor: str | None = None,
    linewidth: float = 0.0,
    legend: bool = True,
    colorbar: bool = True,
    legend_title: str | None = None,
    mask: np.ndarray | None = None,
) -> Collection:
    """Draw every spot as a circle of its true size (``size`` × diameter) coloured by ``values``.

    ``values`` (one per table row) are categorical (palette + legend, NaN in ``na_color`` and listed as
    ``NA``) or continuous (``cmap``, ``vmin``/``vmax`` as numbers or percentiles ``"p99"``, colorbar,
    NaN in ``na_color``); ``kind`` forces one. ``None`` draws the outlines only. ``mask`` limits the
    drawing to some spots. Returns the :class:`~matplotlib.collections.EllipseCollection`.
    """
    from matplotlib import colormaps, colors
    from matplotlib.collections import EllipseCollection

    n = spots.n_obs
    keep = np.ones(n, bool) if mask is None else np.asarray(mask, bool)
    if keep.shape != (n,):
        raise InputError(f"mask must have one entry per spot ({n}), got shape {keep.shape}.")
    if not size > 0:
        raise InputError(f"size must be positive (a fraction of the spot diameter), got {size}.")
    d = spots.diameter * float(size)
    coll = EllipseCollection(
        widths=np.full(int(keep.sum()), d), heights=np.full(int(keep.sum()), d), angles=0.0, units="xy",
        offsets=spots.centers[keep], offset_transform=ax.transData, zorder=2,
    )
    if values is None:
        coll.set_facecolor("none")
        coll.set_edgecolor(edgecolor or "black")
        coll.set_linewidth(linewidth or 0.6)
        coll.set_alpha(alpha)
        ax.add_collection(coll, autolim=False)
        return coll
    vals = values if isinstance(values, pd.Series) else pd.Series(np.asarray(values))
    if len(vals) != n:
        raise InputError(f"values has {len(vals)} entries but the section has {n} spots.")
    kind = kind or ("categorical" if is_categorical(vals) else "continuous")
    if kind == "categorical":
        cat = vals.astype("category") if not isinstance(vals.dtype, pd.CategoricalDtype) else vals
        cats = list(cat.cat.categories)
        cmap_cat = category_colors(cats, palette=palette, uns_colors=uns_colors)
        face = np.array([colors.to_rgba(cmap_cat[c]) if not pd.isna(c) else colors.to_rgba(na_color)
                         for c in cat.to_numpy()], dtype=float).reshape(n, 4)
        face[:, 3] *= alpha
        coll.set_facecolor(face[keep])
        if edgecolor is not None:
            coll.set_edgecolor(edgecolor)
        coll.set_linewidth(linewidth)
        ax.add_collection(coll, autolim=False)
        if legend:
            present = set(cat[keep].dropna().unique())
            shown = [c for c in cats if c in present]
            has_na = bool(cat[keep].isna().any())
            _legend(ax, [str(c) for c in shown] + (["NA"] if has_na else []),
                    [cmap_cat[c] for c in shown] + ([na_color] if has_na else []), title=legend_title)
        return coll
    if kind != "continuous":
        raise InputError(f"kind must be 'categorical' or 'continuous', got {kind!r}.")
    x = pd.to_numeric(vals, errors="coerce").to_numpy(dtype=np.float64)
    finite = x[keep & np.isfinite(x)]
    lo = _limit(finite, vmin, float(finite.min()) if finite.size else 0.0)
    hi = _limit(finite, vmax, float(finite.max()) if finite.size else 1.0)
    if hi <= lo:
        hi = lo + 1e-12
    cm = (colormaps[cmap] if isinstance(cmap, str) else cmap).with_extremes(bad=na_color)
    coll.set_array(np.ma.masked_invalid(x[keep]))
    coll.set_cmap(cm)
    coll.set_norm(colors.Normalize(vmin=lo, vmax=hi))
    coll.set_alpha(alpha)
    if edgecolor is not None:
        coll.set_edgecolor(edgecolor)
    coll.set_linewidth(linewidth)
    ax.add_collection(coll, autolim=False)
    if colorbar:
        cb = ax.get_figure().colorbar(coll, ax=ax, shrink=0.7, fraction=0.05, pad=0.02)
        cb.outline.set_visible(False)
        if legend_title:
            cb.set_label(legend_title)
    return coll


def _legend(ax: Axes, labels: list[str], cols: list[str], *, title: str | None) -> None:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker="o", linestyle="", markersize=8, markerfacecolor=c, markeredgewidth=0)
               for c in cols]
    ax.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False, fontsize="small",
              title=title, ncol=1 if len(labels) <= 14 else 2 if len(labels) <= 30 else 3, handletextpad=0.2)


# ------------------------------------------------------------------------------------------------
# scalebar
# ------------------------------------------------------------------------------------------------
def _nice(x: float) -> float:
    """The largest 1, 2 or 5 × 10^k not above ``x``."""
    k = np.floor(np.log10(x))
    for m in (5.0, 2.0, 1.0):
        if m * 10**k <= x:
            return float(m * 10**k)
    return float(10**k)


def scalebar(ax: Axes, spots: Spots, *, length_um: float | None = None, loc: str = "lower right") -> float | None:
    """Draw a scalebar in µm (about a fifth of the panel width unless ``length_um``); return its length.

    Skipped, with a note in the log, when the physical pixel size is unknown.
    """
    from matplotlib.font_manager import FontProperties
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    mpp = spots.microns_per_pixel
    if mpp is None or not mpp > 0:
        log.info(f"scalebar skipped: the pixel size of section {spots.name!r} in µm is unknown")
        return None
    x0, x1 = sorted(ax.get_xlim())
    width_um = (x1 - x0) * mpp
    length = float(length_um) if length_um is not None else _nice(width_um / 5.0)
    if not length > 0:
        raise InputError(f"scalebar length must be positive, got {length_um}.")
    label = f"{length / 1000:g} mm" if length >= 1000 else f"{length:g} µm"
    bar = AnchoredSizeBar(ax.transData, length / mpp, label, loc, pad=0.3, borderpad=0.4, sep=3, color="black",
                          frameon=True, size_vertical=(x1 - x0) / 150.0, fontproperties=FontProperties(size="small"))
    bar.patch.set_facecolor("white")
    bar.patch.set_alpha(0.6)
    bar.patch.set_edgecolor("none")
    ax.add_artist(bar)
    return length


# ------------------------------------------------------------------------------------------------
# one panel, several panels, finishing
# ------------------------------------------------------------------------------------------------
def spatial_panel(
    ax: Axes,
    spots: Spots,
    values: pd.Series | np.ndarray | None = None,
    *,
    title: str | None = None,
    image: bool = True,
    level: int | Literal["auto"] = "auto",
    box: tuple[float, float, float, float] | None = None,
    img_alpha: float = 1.0,
    show_spots: bool = True,
    with_scalebar: bool = True,
    dpi: float | None = None,
    **spot_kw: Any,
) -> Collection | None:
    """One spatial panel: image (optional) + spots coloured by ``values`` + scalebar + title.

    ``show_spots=False`` draws the image alone (the "H&E" panel). Keyword arguments go to
    :func:`draw_spots`. Returns the spot collection (``None`` without spots).
    """
    box = crop_box(spots) if box is None else box
    if image and spots.has_image:
        draw_image(ax, spots, level, box=box, alpha=img_alpha, dpi=dpi)
    else:
        _setup_axes(ax, box)
    coll = draw_spots(ax, spots, values, **spot_kw) if show_spots else None
    if with_scalebar:
        scalebar(ax, spots)
    if title is not None:
        ax.set_title(title)
    return coll


@dataclass
class Panels:
    """Axes to draw into: ``fig``, ``axes`` (one per panel), ``given`` (the user passed ``ax=``)."""

    fig: Figure
    axes: list[Axes]
    given: bool


def panels(
    n: int,
    *,
    ax: Axes | Sequence[Axes] | None = None,
    ncols: int = 3,
    panel_size: float = 4.0,
    aspect: float = 1.0,
    extra_width: float | Sequence[float] = 0.0,
) -> Panels:
    """``n`` panels on a grid of at most ``ncols`` columns, or the user's ``ax`` (one or ``n`` axes).

    Each panel is ``panel_size`` inches high and about ``panel_size * aspect`` wide, plus
    ``extra_width`` inches (one value, or one per panel) for its legend or colorbar. Unused grid
    cells are removed.
    """
    import matplotlib.pyplot as plt

    if n < 1:
        raise InputError("Nothing to plot (no panel).")
    if ax is not None:
        axes = [ax] if not isinstance(ax, Sequence | np.ndarray) else list(np.ravel(ax))
        if len(axes) != n:
            raise InputError(
                f"This plot has {n} panels but ax= holds {len(axes)} axes; pass {n} axes or leave ax=None."
            )
        return Panels(axes[0].get_figure(), axes, True)
    if ncols < 1:
        raise InputError(f"ncols must be at least 1, got {ncols}.")
    if not panel_size > 0:
        raise InputError(f"panel_size must be positive (inches), got {panel_size}.")
    extra = [float(extra_width)] * n if np.isscalar(extra_width) else [float(e) for e in extra_width]  # type: ignore[arg-type]
    if len(extra) != n:
        raise InputError(f"extra_width has {len(extra)} entries for {n} panels.")
    ncols = min(int(ncols), n)
    nrows = -(-n // ncols)
    col_extra = [max(extra[i] for i in range(c, n, ncols)) for c in range(ncols)]
    body = max(panel_size - 0.35, 0.5) * aspect  # the title takes about 0.35 in of the height
    widths = [body + e for e in col_extra]
    fig, grid = plt.subplots(nrows, ncols, figsize=(sum(widths) + 0.1 * ncols, nrows * panel_size), squeeze=False,
                             layout="constrained", gridspec_kw={"width_ratios": widths})
    flat = list(grid.ravel())
    for unused in flat[n:]:
        unused.remove()
    return Panels(fig, flat[:n], False)
