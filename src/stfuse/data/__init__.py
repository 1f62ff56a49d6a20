"""Data preparation between the Spots view and the models: ``stfuse.data``.

Reference and target sections, gene selection and normalisation, neighbour arrays, validation
splits, tiles, single-section preparation (expression + graph + image features, PCA blocks); and the :class:`Registry` that records how a model's training data were prepared,
is saved with the model and is re-applied to every new section (scvi-tools' setup/registry,
novae's ``data``). Knows AnnData and the Spots view; knows no model. The readers of datasets are
:mod:`stfuse.datasets`.
"""

from ._genes import measured_expression, select_genes, shared_variable_genes
from ._neighbours import neighbour_index, stack_neighbours
from ._registry import Registry
from ._sections import Section, as_list, binary_labels, reference_sections, section_name
from ._single import (
    PCBlocks,
    SingleSection,
    graph_rule,
    image_block,
    pca,
    prepare_pcs,
    prepare_section,
    spot_graph,
    standardise,
)
from ._splits import block_split, stratified_split
from ._tables import prediction_table
from ._tiles import (
    TileStore,
    TrainingTiles,
    all_training_tiles,
    tile_batches,
    tile_side,
    training_tiles,
)

__all__ = [
    "PCBlocks",
    "Registry",
    "Section",
    "SingleSection",
    "TileStore",
    "TrainingTiles",
    "all_training_tiles",
    "as_list",
    "binary_labels",
    "block_split",
    "graph_rule",
    "image_block",
    "measured_expression",
    "neighbour_index",
    "pca",
    "prediction_table",
    "prepare_pcs",
    "prepare_section",
    "reference_sections",
    "section_name",
    "select_genes",
    "shared_variable_genes",
    "spot_graph",
    "stack_neighbours",
    "standardise",
    "stratified_split",
    "tile_batches",
    "tile_side",
    "training_tiles",
]
