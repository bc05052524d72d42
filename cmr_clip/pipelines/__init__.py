"""transformers pipelines for CMR-CLIP (`zero-shot-cmr`) and the prompt sets they use."""

from .prompts import PromptSet, PromptSetError, model_prompt_set
from .scoring import PromptBank, ZeroShotQuery
from .zero_shot import ZeroShotCMRPipeline

__all__ = ["PromptBank", "PromptSet", "PromptSetError", "ZeroShotCMRPipeline", "ZeroShotQuery", "model_prompt_set"]
