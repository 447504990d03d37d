"""Reference data: the :class:`Dataset` of training and testing (:mod:`.dataset`) and the
readers and writers of every format (:mod:`.io` dispatches; n2p2's input.data in
:mod:`.n2p2_data`, mlearn JSON in :mod:`.mlearn`, everything else through ASE)."""

from .dataset import Dataset, concatenate, random_split, stratified_split
from .io import convert_units, read_structures, reference_values, write_predictions
from .mlearn import mlearn_stress, read_mlearn_json
from .n2p2_data import read_input_data, write_input_data

__all__ = [
    "Dataset",
    "concatenate",
    "convert_units",
    "mlearn_stress",
    "random_split",
    "read_input_data",
    "read_mlearn_json",
    "read_structures",
    "reference_values",
    "stratified_split",
    "write_input_data",
    "write_predictions",
]
