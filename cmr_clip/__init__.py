"""cmr-clip: cardiac MRI video-text foundation models (CMR-CLIP, CMR-TARGET) for the Hugging Face ecosystem.

Importing this package (or any of its modules) registers the models, processors and pipelines with
transformers' Auto* classes and pipeline registry, so that `AutoModel.from_pretrained(dir)` gives a
`CMRCLIPModel`, `AutoProcessor.from_pretrained(dir)` its `CMRCLIPProcessor`,
`AutoModelForVideoClassification.from_pretrained(dir)` a `CMRCLIPForStudyClassification` and
`pipeline("zero-shot-cmr", model=dir)` a `ZeroShotCMRPipeline`. The layers below this file are described in
docs/architecture.md.
"""

from . import _quiet_imports  # noqa: F401, I001  (first: transformers' import chain without optional backends' noise)
from transformers import (
    AutoConfig,
    AutoFeatureExtractor,
    AutoModel,
    AutoModelForImageTextToText,
    AutoModelForVideoClassification,
    AutoProcessor,
)
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
AutoFeatureExtractor.register(CMRCLIPConfig, CMRStudyProcessor, exist_ok=True)
AutoProcessor.register(CMRCLIPConfig, CMRCLIPProcessor, exist_ok=True)
AutoFeatureExtractor.register(CMRTargetConfig, CMRStudyProcessor, exist_ok=True)
AutoProcessor.register(CMRTargetConfig, CMRTargetProcessor, exist_ok=True)
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
