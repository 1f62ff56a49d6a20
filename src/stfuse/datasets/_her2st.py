"""HER2-positive breast cancer ST data (Andersson et al., Nat. Commun. 2021)."""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from pathlib import Path

from .. import _logging as log
from .._errors import DataNotFoundError, InputError
from .._settings import settings

__all__ = ["her2st", "her2st_path", "her2st_sections"]

REPO = "almaan/her2st"
RAW = f"https://raw.githubusercontent.com/{REPO}/master"
API = f"https://api.github.com/repos/{REPO}/contents"
_SECTION = re.compile(r"^[A-H][1-6]$")

#: sections with a pathologist annotation, and sections with an H&E image in the development data
LABELLED_SECTIONS = ("B1", "C1", "D1", "E1", "F1", "G2", "H1")
IMAGE_SECTIONS = ("B4", "C2", "C3", "C4", "C5", "C6")


def her2st_sections(path: str | os.PathLike | None = None) -> list[str]:
    """Sections available in a local HER2ST folder (those with a counts file).

    Parameters
    ----------
    path
        Folder in the HER2ST layout; default ``$STFUSE_DATA/her2st``.

    Returns
    -------
    Sorted section names such as ``["B1", "B2", ...]``.

    Examples
    --------
    >>> import stfuse as sf
    >>> "C2" in sf.datasets.her2st_sections()  # doctest: +SKIP
    True
    """
    root = her2st_path(path, download=False)
    return sorted(p.name.split(".")[0] for p in (root / "ST-cnts").glob("*.tsv.gz"))


def her2st_path(path: str | os.PathLike | None = None, *, download: bool = True) -> Path:
    """Resolve the HER2ST folder: ``path``, else ``$STFUSE_DATA/her2st``, else the cache dir.

    Examples
    --------
    >>> import stfuse as sf
    >>> sf.datasets.her2st_path(download=False)  # doctest: +SKIP
    PosixPath('../shared/data/her2st')
    """
    if path is not None:
        p = Path(path)
        if (p / "her2st" / "ST-cnts").is_dir():
            p = p / "her2st"
        if not (p / "ST-cnts").is_dir():
            raise DataNotFoundError(f"{str(p)!r} is not a folder in the HER2ST layout (no ST-cnts/ inside).")
        return p
    env = os.environ.get("STFUSE_DATA")
    if env and (Path(env) / "her2st" / "ST-cnts").is_dir():
        return Path(env) / "her2st"
    cache = settings.cachedir / "her2st"
    if (cache / "ST-cnts").is_dir() or download:
        return cache
    raise DataNotFoundError(
        "No HER2ST data found: pass path=..., set STFUSE_DATA to a folder holding her2st/, or call "
        "sf.datasets.her2st(...) online to download it."
    )


def _fetch(url: str, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(dest.suffix + ".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as r, open(tmp, "wb") as f:
            while chunk := r.read(1 << 20):
                f.write(chunk)
    except (urllib.error.URLError, TimeoutError, OSError) as e:
        tmp.unlink(missing_ok=True)
        raise DataNotFoundError(
            f"Could not download {url} ({e}). Offline? Download the HER2ST files from "
            f"https://github.com/{REPO} yourself and pass path=... (a folder with ST-cnts/, ST-spotfiles/, "
            "ST-imgs/, ...) or set STFUSE_DATA to its parent."
        ) from None
    tmp.replace(dest)
    return dest


def _ensure(root: Path, rel: str, remote: str, *, required: bool) -> Path | None:
    p = root / rel
    if p.exists():
        return p
    if root != settings.cachedir / "her2st":
        if required:
            raise DataNotFoundError(f"HER2ST file {str(p)!r} is missing.")
        return None
    try:
        log.info(f"downloading {remote} -> {p}")
        return _fetch(f"{RAW}/{remote}", p)
    except DataNotFoundError:
        if required:
            raise
        return None


def _image_file(root: Path, section: str, *, download: bool) -> Path | None:
    folder = root / "ST-imgs" / section[0] / section
    found = sorted(folder.glob("*.jpg")) if folder.is_dir() else []
    if found or not download or root != settings.cachedir / "her2st":
        return found[0] if found else None
    try:
        with urllib.request.urlopen(f"{API}/data/ST-imgs/{section[0]}/{section}", timeout=30) as r:
            listing = json.load(r)
    except (urllib.error.URLError, TimeoutError, OSError, ValueError):
        return None
    names = [e["name"] for e in listing if isinstance(e, dict) and e.get("name", "").endswith(".jpg")]
    if not names:
        return None
    return _fetch(f"{RAW}/data/ST-imgs/{section[0]}/{section}/{names[0]}", folder / names[0])


def her2st(section: str, path: str | os.PathLike | None = None, *, image: bool = True):
    """Read one HER2ST section (counts, spots, H&E image, pathologist labels, author clusters).

    Looks in ``path``, else ``$STFUSE_DATA/her2st``, else the cache dir (``sf.settings.cachedir``),
    downloading missing files from the public ``almaan/her2st`` repository when online.

    Parameters
    ----------
    section
        Section name, ``"A1"`` … ``"H3"``.
    path
        Folder in the HER2ST layout (``ST-cnts/``, ``ST-spotfiles/``, ``ST-imgs/``, ``ST-pat/lbl/``,
        ``ST-cluster/lbl/``, ``ST-cluster/motivation.csv``), or its parent.
    image
        Attach the H&E image when the section has one.

    Returns
    -------
    :class:`spatialdata.SpatialData`, see :func:`stfuse.io.read_st`. ``obs["label"]`` holds the
    pathologist label (B1, C1, D1, E1, F1, G2, H1), ``obs["cluster"]``/``obs["cluster_name"]`` the
    authors' expression clusters, ``obs["cancer"]`` cancer by whichever source is present.

    Examples
    --------
    >>> import stfuse as sf
    >>> sdata = sf.datasets.her2st("C2")  # doctest: +SKIP
    >>> sdata.tables["table"].obs["cluster"].notna().sum()  # doctest: +SKIP
    185
    """
    from ..io import read_st

    section = str(section).upper()
    if not _SECTION.match(section):
        raise InputError(f"HER2ST sections are named A1 … H3 (patient letter + number); got {section!r}.")
    root = her2st_path(path)
    counts = _ensure(root, f"ST-cnts/{section}.tsv.gz", f"data/ST-cnts/{section}.tsv.gz", required=True)
    spots = _ensure(root, f"ST-spotfiles/{section}_selection.tsv", f"data/ST-spotfiles/{section}_selection.tsv",
                    required=True)
    labels = _ensure(root, f"ST-pat/lbl/{section}_labeled_coordinates.tsv",
                     f"data/ST-pat/lbl/{section}_labeled_coordinates.tsv", required=False)
    clusters = _ensure(root, f"ST-cluster/lbl/{section}-cluster-annotation.tsv.gz",
                       f"res/ST-cluster/lbl/{section}-cluster-annotation.tsv.gz", required=False)
    names = _ensure(root, "ST-cluster/motivation.csv", "res/ST-cluster/motivation.csv", required=False)
    img = _image_file(root, section, download=True) if image else None
    return read_st(counts, spots, img, labels=labels, clusters=clusters, cluster_names=names if clusters else None,
                   section=section)
