"""cmr-clip: cardiac MRI video-text foundation models (CMR-CLIP, CMR-TARGET) for the Hugging Face ecosystem.

Importing this package registers the models with transformers' Auto* classes (and, as they land, the
processors and pipelines), so that `AutoModel.from_pretrained(dir)` gives a `CMRCLIPModel` (and
`AutoModelForVideoClassification.from_pretrained(dir)` a `CMRCLIPForStudyClassification`).
"""

from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText, AutoModelForVideoClassification
from transformers.pipelines import PIPELINE_REGISTRY

from .modeling import (
    CMRCLIPConfig,
    CMRCLIPForStudyClassification,
    CMRCLIPModel,
    CMRCLIPOutput,
    CMRCLIPVisionConfig,
    CMRCLIPVisionModel,
    CMRTargetConfig,
    CMRTargetForConditionalGeneration,
)
from .index import CMRStudyIndex
from .pipelines import CMRReportGenerationPipeline, PromptSet, ZeroShotCMRPipeline
from .processing import (
    CMRCLIPProcessor,
    CMRStudyError,
    CMRStudyProcessor,
    CMRTargetProcessor,
    MultipleStudiesError,
    Series,
    Study,
    StudyLayout,
    read_studies,
    read_study,
)

__version__ = "0.1.0.dev0"

AutoConfig.register(CMRCLIPConfig.model_type, CMRCLIPConfig, exist_ok=True)
AutoConfig.register(CMRCLIPVisionConfig.model_type, CMRCLIPVisionConfig, exist_ok=True)
AutoModel.register(CMRCLIPConfig, CMRCLIPModel, exist_ok=True)
AutoModel.register(CMRCLIPVisionConfig, CMRCLIPVisionModel, exist_ok=True)
# A CMR-CLIP directory loads as a study classifier: video tower and projection, fresh head.
AutoModelForVideoClassification.register(CMRCLIPConfig, CMRCLIPForStudyClassification, exist_ok=True)
AutoConfig.register(CMRTargetConfig.model_type, CMRTargetConfig, exist_ok=True)
AutoModel.register(CMRTargetConfig, CMRTargetForConditionalGeneration, exist_ok=True)
AutoModelForImageTextToText.register(CMRTargetConfig, CMRTargetForConditionalGeneration, exist_ok=True)
PIPELINE_REGISTRY.register_pipeline("zero-shot-cmr", pipeline_class=ZeroShotCMRPipeline, pt_model=AutoModel)
PIPELINE_REGISTRY.register_pipeline("cmr-report-generation", pipeline_class=CMRReportGenerationPipeline,
                                    pt_model=AutoModelForImageTextToText)

__all__ = [
    "CMRReportGenerationPipeline",
    "CMRCLIPConfig",
    "CMRCLIPForStudyClassification",
    "CMRCLIPModel",
    "CMRCLIPOutput",
    "CMRCLIPProcessor",
    "CMRCLIPVisionConfig",
    "CMRCLIPVisionModel",
    "CMRStudyError",
    "CMRStudyIndex",
    "CMRStudyProcessor",
    "CMRTargetConfig",
    "CMRTargetForConditionalGeneration",
    "CMRTargetProcessor",
    "MultipleStudiesError",
    "PromptSet",
    "Series",
    "Study",
    "StudyLayout",
    "read_studies",
    "read_study",
    "ZeroShotCMRPipeline",
]
