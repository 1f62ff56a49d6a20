"""Outputs of a frozen network, computed once per input and reused (across folds, epochs, test-time augmentation)."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

import numpy as np
import torch

__all__ = ["MapCache", "map_cache", "tile_digests"]


def tile_digests(tiles: Any, batch_size: int = 256) -> list[bytes]:
    """A 16-byte content hash (BLAKE2b) of every image of ``tiles`` (``(n, ...)`` array or memmap).

    Two tiles share a digest only when every pixel is equal, so a digest names the tile whatever
    section, fold or order it came from.

    Examples
    --------
    >>> import numpy as np
    >>> from stfuse.nn import tile_digests
    >>> t = np.zeros((3, 3, 4, 4), np.uint8)
    >>> t[2, 0, 0, 0] = 1
    >>> d = tile_digests(t)
    >>> d[0] == d[1], d[0] == d[2]
    (True, False)
    """
    out: list[bytes] = []
    n = int(tiles.shape[0])
    for s in range(0, n, batch_size):
        chunk = np.ascontiguousarray(tiles[s : s + batch_size])
        out += [hashlib.blake2b(t.tobytes(), digest_size=16).digest() for t in chunk]
    return out


class MapCache:
    """Least-recently-used store of a frozen network's outputs, keyed by network, variant and tile content.

    A key is ``(network, variant, digest)``: ``network`` names the frozen weights (a checksum) and the
    input size, ``variant`` the augmentation applied before the network (e.g. one of the 8
    rotations/flips), ``digest`` the tile's pixels (:func:`tile_digests`). Outputs are kept as
    float16 on the CPU; when they exceed ``max_gb`` the least recently used are dropped.

    Parameters
    ----------
    max_gb
        Memory the stored outputs may take (GiB); 0 disables the cache.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from stfuse.nn import MapCache
    >>> cache = MapCache(max_gb=0.01)
    >>> tiles = np.random.default_rng(0).integers(0, 255, (5, 3, 8, 8), dtype=np.uint8)
    >>> encode = lambda x, v: torch.from_numpy(x).float().mean(dim=(2, 3))
    >>> a = cache.get(tiles, encode, network="mean", variant=0)
    >>> b = cache.get(tiles[::-1], encode, network="mean", variant=0)  # served from the cache
    >>> a.shape, cache.hits, cache.misses
    (torch.Size([5, 3]), 5, 5)
    """

    def __init__(self, max_gb: float = 2.0) -> None:
        self.max_gb = float(max_gb)
        self._store: OrderedDict[Hashable, torch.Tensor] = OrderedDict()
        self.nbytes = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._store)

    def clear(self) -> None:
        """Drop every stored output."""
        self._store.clear()
        self.nbytes = 0

    def _put(self, key: Hashable, value: torch.Tensor) -> None:
        self._store[key] = value
        self.nbytes += value.numel() * value.element_size()
        while self.nbytes > self.max_gb * 2**30 and self._store:
            _, old = self._store.popitem(last=False)
            self.nbytes -= old.numel() * old.element_size()

    def get(self, tiles: Any, encode: Callable[[np.ndarray, Any], torch.Tensor], *, network: str, variant: Hashable = 0,
            digests: list[bytes] | None = None, batch_size: int = 64,
            progress: Callable[[Any], Any] | None = None) -> torch.Tensor:
        """Outputs ``(n, ...)`` float16 (CPU) of ``encode(tiles[batch], variant)`` for every tile, stored ones reused.

        Parameters
        ----------
        tiles
            ``(n, ...)`` array (or memmap) of inputs.
        encode
            ``encode(batch, variant) -> tensor (b, ...)``: the frozen network on a batch of ``tiles``.
        network
            Name of the frozen network and its input size (a weights checksum): part of the key.
        variant
            Name of the augmentation ``encode`` applies (any hashable): part of the key.
        digests
            :func:`tile_digests` of ``tiles`` when already computed.
        batch_size
            Tiles per call of ``encode`` for the ones not stored.
        progress
            Wraps the list of batches to compute (a progress bar), or ``None``.
        """
        digests = tile_digests(tiles) if digests is None else digests
        keys = [(network, variant, d) for d in digests]
        missing = [i for i, k in enumerate(keys) if k not in self._store]
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        computed: dict[int, torch.Tensor] = {}
        chunks = [missing[s : s + batch_size] for s in range(0, len(missing), batch_size)]
        for chunk in (progress(chunks) if progress is not None and chunks else chunks):
            out = encode(np.asarray(tiles[np.asarray(chunk)]), variant).detach().to("cpu", torch.float16)
            for i, row in zip(chunk, out):
                computed[i] = row
                if self.max_gb > 0:
                    self._put(keys[i], row)
        rows = []
        for i, k in enumerate(keys):
            if i in computed:
                rows.append(computed[i])
            else:
                rows.append(self._store[k])
                self._store.move_to_end(k)
        if not rows:
            return torch.empty(0, dtype=torch.float16)
        out = torch.stack(rows)
        for i, k in enumerate(keys):  # store views of the result: one copy in memory, not two
            if k in self._store:
                self._store[k] = out[i]
        return out


#: the process-wide cache of frozen encoder maps (HistoSPACE); ``sf.nn.map_cache.clear()`` frees it
map_cache = MapCache()
