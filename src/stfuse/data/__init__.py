"""Data preparation between the Spots view and the models: ``stfuse.data``.

Reference and target sections, gene selection and normalisation, neighbour arrays, validation
splits, tiles; and the :class:`Registry` that records how a model's training data were prepared,
is saved with the model and is re-applied to every new section (scvi-tools' setup/registry,
novae's ``data``). Knows AnnData and the Spots view; knows no model. The readers of datasets are
:mod:`stfuse.datasets`.
"""

from ._genes import measured_expression, select_genes, shared_variable_genes
from ._neighbours import neighbour_index, stack_neighbours, zscore
from ._registry import Registry
from ._sections import Section, as_list, binary_labels, reference_sections, section_name
from ._splits import block_split, stratified_split
from ._tables import prediction_table
from ._tiles import (
    TileStore,
    TrainingTiles,
    extract_tiles,
    stain_for,
    tile_batches,
    tile_side,
    training_tiles,
)

__all__ = [
    "Registry",
    "Section",
    "TileStore",
    "TrainingTiles",
    "as_list",
    "binary_labels",
    "block_split",
    "extract_tiles",
    "measured_expression",
    "neighbour_index",
    "prediction_table",
    "reference_sections",
    "section_name",
    "select_genes",
    "shared_variable_genes",
    "stack_neighbours",
    "stain_for",
    "stratified_split",
    "tile_batches",
    "tile_side",
    "training_tiles",
    "zscore",
]
