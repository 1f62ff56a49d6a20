"""Shared parameter documentation, injected into docstrings with :func:`inject_docs`.

A docstring writes ``%(sdata)s`` on its own line (indented like the other parameters) and the
decorator replaces it with the shared text, so every tool documents ``sdata``, ``table_key``,
``key_added``, ``device``, ``random_state`` and ``copy`` the same way.

The keywords that choose the section a tool works on (``table_key``, ``shapes_key``, ``image_key``,
``library_id``, ``library_key``, ``coordinate_system``; :data:`stfuse._spots.SELECT`) default to
``None`` (inferred) in every tool, which forwards them to :func:`stfuse._spots.get_spots` with
``get_spots(sdata, **selection(locals()))``.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)

_PARAMS: dict[str, str] = {
    "sdata": """\
sdata
    A :class:`spatialdata.SpatialData` with a table annotating spot circles and an H&E image, or an
    :class:`anndata.AnnData` with ``obsm["spatial"]`` and squidpy-style ``uns["spatial"][library_id]``.""",
    "table_key": """\
table_key
    Key of the table in ``sdata.tables`` (ignored for an AnnData). ``None``: the only table, else
    ``"table"``.""",
    "library_id": """\
library_id
    For an AnnData: the library of ``uns["spatial"]`` (squidpy's ``library_id``) holding the image and
    scale factors. ``None``: the only one, or the one named by ``library_key``.""",
    "library_key": """\
library_key
    For an AnnData concatenated from several sections: the ``obs`` column naming each spot's library
    (squidpy's ``library_key``). Tools work on one section at a time, so all rows must belong to one
    library, e.g. ``adata[adata.obs[library_key] == "A"].copy()``.""",
    "coordinate_system": """\
coordinate_system
    For a SpatialData: the coordinate system in which the spots are placed on the image. ``None``: any
    that the spots and the image share (``"global"`` first).""",
    "shapes_key": """\
shapes_key
    Key of the spot circles in ``sdata.shapes``. Inferred when the table annotates exactly one element.""",
    "image_key": """\
image_key
    Key of the H&E image in ``sdata.images``. Inferred when exactly one image shares the spots'
    coordinate system; otherwise the error lists the candidates.""",
    "key_added": """\
key_added
    Results are written to ``obs[key_added]``, ``obsm[f"X_{key_added}"]`` and ``uns[key_added]``.
    Existing results under the same key are replaced (with a warning) only after success.""",
    "device": """\
device
    Torch device: ``"auto"`` (CUDA if available, else CPU; see :attr:`stfuse.settings`), ``"cpu"``,
    ``"cuda"``, ``"cuda:1"``, ...""",
    "random_state": """\
random_state
    Seed for every random choice (initialisation, dropout, batching). Same inputs and seed on CPU
    give the same result bit for bit.""",
    "copy": """\
copy
    Return a modified copy instead of writing into ``sdata``. Images and shapes are shared with the
    original (they are not modified); tables are copied.""",
    "returns_inplace": """\
Returns
-------
``None``, or a copy of ``sdata`` when ``copy=True``. Results are written to the table as described
above; the object is left unchanged if the computation fails.""",
}


def expand_docs(doc: str) -> str:
    r"""``doc`` with every ``%(name)s`` line replaced by the shared parameter text, indented like it.

    Examples
    --------
    >>> from stfuse._docs import expand_docs
    >>> expand_docs("Parameters\n----------\n%(copy)s").splitlines()[2]
    'copy'
    """
    for name, text in _PARAMS.items():
        token = f"%({name})s"
        while token in doc:
            start = doc.index(token)
            line_start = doc.rfind("\n", 0, start) + 1
            indent = doc[line_start:start]
            doc = doc[:line_start] + textwrap.indent(text, indent) + doc[start + len(token) :]
    return doc


def inject_docs(func: F) -> F:
    """Replace ``%(name)s`` lines in ``func.__doc__`` by the shared parameter texts."""
    doc = func.__doc__
    if not doc:
        return func
    doc = textwrap.dedent(doc) if not doc.startswith("\n") else doc
    func.__doc__ = expand_docs(doc)
    return func
