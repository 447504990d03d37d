"""The model: element networks with descriptor scaling and energy transform
(:mod:`.networks`), the model file ``model.pt`` (:mod:`.modelfile`) and the
:class:`Potential` that evaluates it on structures (:mod:`.potential`)."""

from .modelfile import (
    LoadedModel,
    description_from_metadata,
    load_model,
    metadata_dict,
    model_from_weights,
    read_metadata,
    save_model,
    script,
)
from .networks import (
    ACTIVATIONS,
    HDNNP,
    N2P2_ACTIVATIONS,
    SCALING_TYPES,
    ElementNetwork,
    ModelDescription,
    NetworkSpec,
    ScalingParams,
    activation,
    build_hdnnp,
)
from .potential import Potential, Prediction, StructureBatch, make_batch, species_indices

__all__ = [
    "ACTIVATIONS",
    "HDNNP",
    "N2P2_ACTIVATIONS",
    "SCALING_TYPES",
    "ElementNetwork",
    "LoadedModel",
    "ModelDescription",
    "NetworkSpec",
    "Potential",
    "Prediction",
    "ScalingParams",
    "StructureBatch",
    "activation",
    "build_hdnnp",
    "description_from_metadata",
    "load_model",
    "make_batch",
    "metadata_dict",
    "model_from_weights",
    "read_metadata",
    "save_model",
    "script",
    "species_indices",
]
