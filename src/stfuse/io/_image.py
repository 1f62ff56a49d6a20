"""Lazy, decode-once image files as dask arrays."""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from .._errors import DataNotFoundError, InputError

__all__ = ["image_size", "lazy_image"]

#: chunk side of the dask arrays over decoded images
CHUNK = 1024


class _DecodeOnce:
    """Array-like ``(c, y, x)`` view of an image file, decoded on first access and kept (one copy).

    dask calls ``__getitem__`` once per chunk; the first call decodes the file under a lock, every
    later call slices the cached array. Pickling drops the cache and unpickling returns the one decoder
    of this file in the receiving process (:func:`_shared_decoder`), so a dask worker decodes it once
    however many tasks it runs.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = str(path)
        w, h, bands = image_size(self.path)
        self.shape = (3, h, w)
        self.dtype = np.dtype(np.uint8)
        self.ndim = 3
        self._bands = bands
        self._array: np.ndarray | None = None
        self._lock = threading.Lock()
        st = os.stat(self.path)
        self.token = hashlib.sha1(f"{os.path.abspath(self.path)}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]

    def __reduce__(self):
        return (_shared_decoder, (self.path, self.token))

    def _load(self) -> np.ndarray:
        with self._lock:
            if self._array is None:
                self._array = _decode(self.path)
            return self._array

    def __getitem__(self, key):
        return self._load()[key]


#: decoders created by unpickling, per process (a dask worker): the most recent few images stay decoded
_SHARED: OrderedDict[str, _DecodeOnce] = OrderedDict()
_SHARED_MAX = 2
_SHARED_LOCK = threading.Lock()


def _shared_decoder(path: str, token: str) -> _DecodeOnce:
    """The process-wide decoder of an image file (unpickling target of :class:`_DecodeOnce`)."""
    with _SHARED_LOCK:
        src = _SHARED.get(token)
        if src is None:
            src = _SHARED[token] = _DecodeOnce(path)
        _SHARED.move_to_end(token)
        while len(_SHARED) > _SHARED_MAX:
            _SHARED.popitem(last=False)
    return src


def _open(path: str):
    from PIL import Image

    try:
        return Image.open(path)
    except FileNotFoundError:
        raise DataNotFoundError(f"Image file {path!r} does not exist.") from None
    except OSError as e:
        raise InputError(f"Cannot read image {path!r} ({e}); is it a JPEG/PNG/TIFF image?") from None


def image_size(path: str | os.PathLike) -> tuple[int, int, int]:
    """Width, height and number of bands of an image file, read from its header (no decoding)."""
    from PIL import Image

    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with _open(str(path)) as im:
            w, h = im.size
            bands = len(im.getbands())
    finally:
        Image.MAX_IMAGE_PIXELS = old
    _check_complete(str(path))
    return int(w), int(h), bands


def _check_complete(path: str) -> None:
    """Refuse JPEG files cut short (no end-of-image marker), a common result of interrupted copies."""
    if Path(path).suffix.lower() not in (".jpg", ".jpeg"):
        return
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - 4096))
        tail = f.read()
    if b"\xff\xd9" not in tail:
        raise InputError(
            f"Image file {path!r} is truncated (no JPEG end marker); download or copy it again."
        )


#: rows copied out of the decoded image at a time (bounds the transient copy)
_STRIP = 512


def _decode(path: str) -> np.ndarray:
    """Decode an image file into a C-contiguous ``(3, y, x)`` uint8 array.

    Rows are copied out of the decoder strip by strip: peak memory is the decoder's buffer plus the
    result (``np.asarray`` on a whole PIL image would add a third full copy, via ``tobytes``).
    """
    from PIL import Image

    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with _open(path) as im:
            try:
                im.load()
            except OSError as e:
                raise InputError(f"Image file {path!r} is corrupted or truncated ({e}).") from None
            if im.mode != "RGB":
                im = im.convert("RGB")
            w, h = im.size
            arr = np.empty((3, h, w), np.uint8)
            for y in range(0, h, _STRIP):
                y1 = min(y + _STRIP, h)
                arr[:, y:y1] = np.asarray(im.crop((0, y, w, y1))).transpose(2, 0, 1)
    finally:
        Image.MAX_IMAGE_PIXELS = old
    return arr


def lazy_image(path: str | os.PathLike, *, chunks: int = CHUNK):
    """A lazy ``(3, y, x)`` uint8 dask array over an image file, decoded at most once.

    Parameters
    ----------
    path
        JPEG, PNG or (small) TIFF file.
    chunks
        Side of the square dask chunks.

    Returns
    -------
    :class:`dask.array.Array`; nothing is decoded until a chunk is computed.

    Examples
    --------
    >>> from stfuse.io import lazy_image  # doctest: +SKIP
    >>> img = lazy_image("section.jpg")  # doctest: +SKIP
    >>> img[:, :100, :100].compute().shape  # doctest: +SKIP
    (3, 100, 100)
    """
    import dask.array as da

    src = _DecodeOnce(path)
    return da.from_array(
        src, chunks=(3, chunks, chunks), name=f"stfuse-image-{src.token}", meta=np.empty((0, 0, 0), np.uint8)
    )
