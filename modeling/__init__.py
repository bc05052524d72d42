"""CMR-CLIP and CMR-TARGET network definitions (installed as `cmr_clip.modeling`).

Like a model folder in transformers: configurations, modules and the converter for the authors'
released checkpoint. No training, CLI or pipeline code lives here.
"""

from .configuration_cmr_clip import CMRCLIPConfig, CMRCLIPVisionConfig
from .modeling_cmr_clip import (
    CMRCLIPForStudyClassification,
    CMRCLIPModel,
    CMRCLIPOutput,
    CMRCLIPPreTrainedModel,
    CMRCLIPStudyClassifierOutput,
    CMRCLIPVisionModel,
    CMRCLIPVisionModelOutput,
)
from .configuration_cmr_target import CMRTargetConfig
from .modeling_cmr_target import CMRTargetForConditionalGeneration, CMRTargetOutput, CMRTargetPreTrainedModel

__all__ = [
    "CMRCLIPConfig",
    "CMRCLIPForStudyClassification",
    "CMRCLIPModel",
    "CMRCLIPOutput",
    "CMRCLIPPreTrainedModel",
    "CMRCLIPStudyClassifierOutput",
    "CMRCLIPVisionConfig",
    "CMRCLIPVisionModel",
    "CMRCLIPVisionModelOutput",
    "CMRTargetConfig",
    "CMRTargetForConditionalGeneration",
    "CMRTargetOutput",
    "CMRTargetPreTrainedModel",
]
