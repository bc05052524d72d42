"""Training CMR-CLIP with Accelerate: `train(TrainConfig(...))`, `cmr-clip train`, or
`accelerate launch -m cmr_clip.training --config FILE`."""

from .config import TrainConfig
from .losses import gathered_contrastive_loss
from .loop import train

__all__ = ["TrainConfig", "gathered_contrastive_loss", "train"]
