"""EventSPD in PyTorch: configurations, the graph contract, the reference ops and the model."""

from . import contract, ops
from .config import CONFIGS, ModelConfig, get_config
from .model import BACKBONE_STAGES, DECODER_STAGES, SEED_PARAMS, STAGES, EventSPD, InputError

__all__ = ["CONFIGS", "ModelConfig", "get_config", "EventSPD", "InputError", "contract", "ops",
           "STAGES", "BACKBONE_STAGES", "DECODER_STAGES", "SEED_PARAMS"]
