"""Every key name stfuse reads or writes, in one place.

Graph keys follow squidpy (``obsp["spatial_connectivities"]`` ...) so squidpy and scanpy functions
read stfuse's results unchanged.
"""

from __future__ import annotations

# --- inputs written by the readers -----------------------------------------------------------
TABLE = "table"  # default table key in a SpatialData
SPATIAL = "spatial"  # obsm: spot centres in full-resolution image pixels (x, y), as in squidpy
REGION_KEY = "library_id"  # obs column naming the shapes element a row annotates (squidpy: library_key)
INSTANCE_KEY = "spot_id"  # obs column holding the index of the row's circle in its shapes element
SECTION = "section"  # obs column: section name
ARRAY_ROW = "array_row"  # obs: array coordinate y (ST/Visium naming as in squidpy)
ARRAY_COL = "array_col"  # obs: array coordinate x
LABEL = "label"  # obs: pathologist label
CLUSTER = "cluster"  # obs: author expression cluster id
CLUSTER_NAME = "cluster_name"  # obs: author cluster name
CANCER = "cancer"  # obs: bool, cancer according to the label source present
REGION_TRUTH = "region"  # obs of the toy data: ground-truth region
UNDETERMINED = ("undetermined", "unknown", "")  # label values ignored by ARI
META = "stfuse"  # uns: metadata stfuse needs (spot diameter in µm, platform) per region

# --- graphs (squidpy names) --------------------------------------------------------------------
GRAPH_KEY = "spatial"


def connectivities(key: str = GRAPH_KEY) -> str:
    """``obsp`` key of the connectivity matrix for graph ``key`` (squidpy's naming)."""
    return f"{key}_connectivities"


def distances(key: str = GRAPH_KEY) -> str:
    """``obsp`` key of the distance matrix for graph ``key`` (squidpy's naming)."""
    return f"{key}_distances"


def neighbors_uns(key: str = GRAPH_KEY) -> str:
    """``uns`` key of the graph parameters for graph ``key`` (squidpy's naming)."""
    return f"{key}_neighbors"


# --- results of the tools -------------------------------------------------------------------
def obsm(key: str) -> str:
    """``obsm`` key of an embedding written under ``key_added=key``."""
    return f"X_{key}"


def score(key: str) -> str:
    """``obs`` key of a continuous score written under ``key_added=key``."""
    return f"{key}_score"


def pred(key: str) -> str:
    """``obsm`` key of predicted expression written under ``key_added=key``."""
    return f"X_{key}_pred"


def measured(key: str) -> str:
    """``obsm`` key of the measured expression beside ``obsm[pred(key)]`` (normalised like the predictions)."""
    return f"X_{key}_measured"


def colors(key: str) -> str:
    """``uns`` key of the colours of categorical ``obs[key]`` (scanpy's naming, reused by every plot)."""
    return f"{key}_colors"


HISTORY = "history"  # uns[key]: per-epoch training curves {term: values}, the same for every tool
MEASURED = "measured"  # layer of a prediction table: the measured expression, normalised like the predictions


EMBEDDINGS = "stfuse_embeddings"  # uns: provenance of each cached image embedding, by obsm key
