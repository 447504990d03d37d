"""Training: the YAML configuration (:mod:`.config`), the data sets (:mod:`.datasets`),
descriptor and scaling set-up (:mod:`.initialisation`), training tensors and batches
(:mod:`.tensors`), predictions and loss (:mod:`.loss`), the checkpointed state
(:mod:`.checkpoint`), the loop (:mod:`.trainer`), error metrics and plots."""

from .checkpoint import TrainingState, load_checkpoint, save_checkpoint
from .config import Config, config_from_dict, load_config
from .initialisation import build_descriptors, fit_reference_energies, scaling_from
from .loss import LossWeights, loss_terms, predict_batch
from .metrics import error_metrics
from .tensors import TrainingBatch, TrainingData
from .trainer import Trainer, train

__all__ = [
    "Config",
    "LossWeights",
    "Trainer",
    "TrainingBatch",
    "TrainingData",
    "TrainingState",
    "build_descriptors",
    "config_from_dict",
    "error_metrics",
    "fit_reference_energies",
    "load_checkpoint",
    "load_config",
    "loss_terms",
    "predict_batch",
    "save_checkpoint",
    "scaling_from",
    "train",
]
