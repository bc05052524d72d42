"""transformers pipelines: `zero-shot-cmr` (CMR-CLIP) with the prompt sets it uses, and `cmr-report-generation`
(CMR-TARGET)."""

from .report_generation import CMRReportGenerationPipeline
from .prompts import PromptSet, PromptSetError, model_prompt_set
from .scoring import PromptBank, ZeroShotQuery
from .zero_shot import ZeroShotCMRPipeline

__all__ = ["CMRReportGenerationPipeline", "PromptBank", "PromptSet", "PromptSetError", "ZeroShotCMRPipeline", "ZeroShotQuery", "model_prompt_set"]
