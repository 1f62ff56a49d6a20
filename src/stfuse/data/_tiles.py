"""Tiles around spots: their size, stain normalisation, stores for training and batches for prediction."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import _logging as log
from .._spots import Spots
from ..im import StainNormalizer, fit_stain, iter_patches, patch_side_px

__all__ = ["TileStore", "TrainingTiles", "all_training_tiles", "tile_batches", "tile_side", "training_tiles"]


def _stain_for(spots: Spots, side: float, px: int, stain: str | None) -> StainNormalizer | None:
    """One stain normaliser per slide (fitted on an even sample of its spots), or ``None`` without ``stain``."""
    return None if stain is None else fit_stain(spots, side, stain, out_px=px)


def tile_side(spots: Spots, tile: dict[str, Any]) -> float:
    """Tile side in level-0 pixels: the tile's physical size when both sides know µm, else spot diameters.

    Examples
    --------
    >>> import stfuse as sf
    >>> from stfuse._spots import get_spots
    >>> from stfuse.data import tile_side
    >>> tile_side(get_spots(sf.datasets.toy(n_spots=100)), {"size": 2.0})
    48.0
    """
    if tile.get("size_um") and spots.microns_per_pixel:
        return patch_side_px(spots, size_um=tile["size_um"])
    return patch_side_px(spots, size=tile.get("size", 1.0))


class TileStore:
    """uint8 tiles ``(n, 3, px, px)``: in memory below ``ram_gb``, else a memory-mapped temporary file.

    The temporary file lives as long as ``stack`` (an :class:`contextlib.ExitStack`) is open.

    Examples
    --------
    >>> import contextlib
    >>> from stfuse.data import TileStore
    >>> with contextlib.ExitStack() as stack:
    ...     TileStore(10, 32, 0.0, stack, "train").array.shape
    (10, 3, 32, 32)
    """

    def __init__(self, n: int, px: int, ram_gb: float, stack: contextlib.ExitStack, name: str) -> None:
        shape = (n, 3, px, px)
        self.on_disk = n * 3 * px * px > ram_gb * 2**30
        if self.on_disk:
            folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="stfuse-tiles-"))
            log.info(f"{name}: {n} tiles kept on disk ({n * 3 * px * px / 2**30:.2f} GiB > tile_ram_gb={ram_gb})")
            self.array = np.lib.format.open_memmap(Path(folder) / f"{name}.npy", mode="w+", dtype=np.uint8, shape=shape)
        else:
            self.array = np.empty(shape, np.uint8)


def _extract_tiles(spots: Spots, side: float, rows: np.ndarray, store: np.ndarray,
                  stain: StainNormalizer | None, desc: str) -> None:
    """Write the tile of spot ``i`` of ``spots`` to ``store[rows[i]]`` (skipping spots with ``rows < 0``)."""
    index = np.flatnonzero(rows >= 0)
    n_batches = -(-len(index) // 64)
    for batch in log.progress(iter_patches(spots, side, out_px=store.shape[-1], batch_size=64, index=index,
                                           stain=stain), desc=desc, total=n_batches):
        store[rows[batch.index]] = batch.patches


@dataclass
class TrainingTiles:
    """Tiles and targets of the training spots and of the validation spots (``None`` without validation)."""

    tiles: np.ndarray
    Y: np.ndarray
    val_tiles: np.ndarray | None
    val_Y: np.ndarray | None


def training_tiles(sections: Sequence[Spots], targets: Sequence[np.ndarray], masks: Sequence[np.ndarray], *,
                   size: float, px: int, stain: str | None, ram_gb: float, stack: contextlib.ExitStack,
                   ) -> TrainingTiles:
    """Cut the tile of every training spot once, straight into its store (training or validation).

    Parameters
    ----------
    sections
        Spots of the training sections.
    targets
        ``(n_i, n_genes)`` targets of each section.
    masks
        ``(n_i,)`` validation masks of each section (e.g. :func:`block_split`).
    size
        Tile side in spot diameters of each section.
    px
        Tile side in pixels.
    stain
        Stain normalisation (one normaliser per section), or ``None``.
    ram_gb
        Stores above this size (GiB) are memory-mapped temporary files living as long as ``stack``.
    stack
        Exit stack owning the temporary files.

    Returns
    -------
    :class:`TrainingTiles`.

    Examples
    --------
    >>> import contextlib
    >>> import numpy as np
    >>> import stfuse as sf
    >>> from stfuse._spots import get_spots
    >>> from stfuse.data import training_tiles
    >>> spots = get_spots(sf.datasets.toy(n_spots=60))
    >>> mask = np.arange(60) % 5 == 0
    >>> with contextlib.ExitStack() as stack:
    ...     tt = training_tiles([spots], [np.ones((60, 2))], [mask], size=1.0, px=16, stain=None, ram_gb=1.0,
    ...                         stack=stack)
    ...     tt.tiles.shape, tt.val_tiles.shape
    ((48, 3, 16, 16), (12, 3, 16, 16))
    """
    n_val = int(sum(m.sum() for m in masks))
    n_tr = int(sum(len(m) for m in masks)) - n_val
    train_store = TileStore(n_tr, px, ram_gb, stack, "train").array
    val_store = TileStore(n_val, px, ram_gb, stack, "val").array if n_val else None
    Y_tr, Y_val = [], []
    o_tr = o_val = 0
    for i, (s, m, Y) in enumerate(zip(sections, masks, targets)):
        side = patch_side_px(s, size=size)
        norm = _stain_for(s, side, px, stain)
        rows = np.full(s.n_obs, -1, np.int64)
        rows[~m] = o_tr + np.arange(int((~m).sum()))
        _extract_tiles(s, side, rows, train_store, norm, f"tiles of reference {i}")
        if m.any():
            rows = np.full(s.n_obs, -1, np.int64)
            rows[m] = o_val + np.arange(int(m.sum()))
            _extract_tiles(s, side, rows, val_store, norm, f"tiles of reference {i} (validation)")
        o_tr += int((~m).sum())
        o_val += int(m.sum())
        Y_tr.append(Y[~m])
        Y_val.append(Y[m])
    return TrainingTiles(train_store, np.concatenate(Y_tr), val_store, np.concatenate(Y_val) if n_val else None)


def all_training_tiles(sections: Sequence[Spots], targets: Sequence[np.ndarray], split: TrainingTiles, *,
                       size: float, px: int, stain: str | None, ram_gb: float,
                       stack: contextlib.ExitStack) -> tuple[np.ndarray, np.ndarray]:
    """Every tile of ``split`` (training and validation) in one store, and its targets: for a refit on every spot.

    Joined in memory when both fit in ``ram_gb``; otherwise cut again, without a validation split,
    into one (memory-mapped) store.

    Examples
    --------
    >>> import contextlib
    >>> import numpy as np
    >>> import stfuse as sf
    >>> from stfuse._spots import get_spots
    >>> from stfuse.data import all_training_tiles, training_tiles
    >>> spots = get_spots(sf.datasets.toy(n_spots=60))
    >>> Y = [np.ones((60, 2))]
    >>> with contextlib.ExitStack() as stack:
    ...     tt = training_tiles([spots], Y, [np.arange(60) % 5 == 0], size=1.0, px=16, stain=None, ram_gb=1.0,
    ...                         stack=stack)
    ...     tiles, targets = all_training_tiles([spots], Y, tt, size=1.0, px=16, stain=None, ram_gb=1.0, stack=stack)
    ...     tiles.shape, targets.shape
    ((60, 3, 16, 16), (60, 2))
    """
    if split.val_tiles is None:
        return split.tiles, split.Y
    n = len(split.tiles) + len(split.val_tiles)
    if n * 3 * px * px <= ram_gb * 2**30:
        return (np.concatenate([np.asarray(split.tiles), np.asarray(split.val_tiles)]),
                np.concatenate([split.Y, split.val_Y]))
    full = training_tiles(sections, targets, [np.zeros(s.n_obs, bool) for s in sections], size=size, px=px,
                          stain=stain, ram_gb=ram_gb, stack=stack)
    return full.tiles, full.Y


def tile_batches(spots: Spots, tile: dict[str, Any], px: int, *, batch_size: int = 128,
                 desc: str = "tiles") -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(index, tiles)`` batches of every spot's tile, cut as ``tile`` says (size, µm, stain), with progress.

    Memory is bounded by one batch; the stain normaliser is fitted on this slide.

    Examples
    --------
    >>> import stfuse as sf
    >>> from stfuse._spots import get_spots
    >>> from stfuse.data import tile_batches
    >>> index, tiles = next(tile_batches(get_spots(sf.datasets.toy(n_spots=100)), {"size": 1.0}, 16, batch_size=40))
    >>> index.shape, tiles.shape
    ((40,), (40, 3, 16, 16))
    """
    side = tile_side(spots, tile)
    norm = _stain_for(spots, side, px, tile.get("stain"))
    n_batches = -(-spots.n_obs // batch_size)
    for batch in log.progress(iter_patches(spots, side, out_px=px, batch_size=batch_size, stain=norm),
                              desc=desc, total=n_batches):
        yield batch.index, batch.patches
