"""cmr-clip: cardiac MRI video-text foundation models (CMR-CLIP, CMR-TARGET) for the Hugging Face ecosystem.

Importing this package registers the models with transformers' Auto* classes (and, as they land, the
processors and pipelines), so that `AutoModel.from_pretrained(dir)` gives a `CMRCLIPModel`.
"""

from transformers import AutoConfig, AutoModel
from transformers.pipelines import PIPELINE_REGISTRY

from .modeling import (
    CMRCLIPConfig,
    CMRCLIPForStudyClassification,
    CMRCLIPModel,
    CMRCLIPOutput,
    CMRCLIPVisionConfig,
    CMRCLIPVisionModel,
)
from .pipelines import PromptSet, ZeroShotCMRPipeline
from .processing import (
    CMRCLIPProcessor,
    CMRStudyError,
    CMRStudyProcessor,
    Series,
    Study,
    StudyLayout,
    read_study,
)

__version__ = "0.1.0.dev0"

AutoConfig.register(CMRCLIPConfig.model_type, CMRCLIPConfig, exist_ok=True)
AutoConfig.register(CMRCLIPVisionConfig.model_type, CMRCLIPVisionConfig, exist_ok=True)
AutoModel.register(CMRCLIPConfig, CMRCLIPModel, exist_ok=True)
AutoModel.register(CMRCLIPVisionConfig, CMRCLIPVisionModel, exist_ok=True)
PIPELINE_REGISTRY.register_pipeline("zero-shot-cmr", pipeline_class=ZeroShotCMRPipeline, pt_model=AutoModel)

__all__ = [
    "CMRCLIPConfig",
    "CMRCLIPForStudyClassification",
    "CMRCLIPModel",
    "CMRCLIPOutput",
    "CMRCLIPProcessor",
    "CMRCLIPVisionConfig",
    "CMRCLIPVisionModel",
    "CMRStudyError",
    "CMRStudyProcessor",
    "PromptSet",
    "Series",
    "Study",
    "StudyLayout",
    "read_study",
    "ZeroShotCMRPipeline",
]
