"""Configuration of CMR-TARGET: CMR-CLIP's video tower feeding a causal language model that writes the
report impression sentence by sentence."""

from typing import Literal

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig
from transformers.configuration_utils import PreTrainedConfig, SubConfigSpec

from .configuration_cmr_clip import CMRCLIPVisionConfig


@strict
class CMRTargetConfig(PreTrainedConfig):
    r"""
    Configuration of [`CMRTargetForConditionalGeneration`].

    The study's video features reach the decoder as a prefix: `num_video_tokens` placeholder tokens
    (`video_token_id`) at the start of the sequence are replaced by projected video tokens, and the decoder
    attends to them with its ordinary causal self-attention. Any causal LM (GPT-2 by default) works
    unchanged, so a pretrained decoder keeps all its weights, and the KV cache, beam search and sampling
    of `generate` apply as for text-only generation.

    Args:
        vision_config (`dict` or [`CMRCLIPVisionConfig`]): the video tower (from a trained CMR-CLIP).
        text_config (`dict` or [`PreTrainedConfig`]): the decoder, any `AutoModelForCausalLM` config
            (`model_type` "gpt2" by default).
        video_token_pooling (`str`): `"cls"`: one token, the video tower's CLS feature (what CMR-CLIP
            embeds); `"cls_frames"`: the CLS feature plus `num_frame_tokens` tokens, each the mean of the
            patch features of a run of consecutive frames (per frame when `num_frame_tokens` equals the
            number of frames), so that the decoder sees which views and phases carry a finding.
        num_frame_tokens (`int`): pooled frame tokens with `"cls_frames"`.
        projector_type (`str`): `"linear"` or `"mlp"` (Linear, GELU, Linear) from the video width to the
            decoder width.
        freeze_vision (`bool`): keep the video tower's contrastive weights fixed while training.
        video_token_id (`int`): the placeholder token for video features.
        sentence_token_id (`int`): the token that separates the impression's sentences.
        max_sentences (`int`, *optional*): default cap on generated sentences (None: until end of text).
    """

    model_type = "cmr_target"
    sub_configs_defaults = {
        "vision_config": CMRCLIPVisionConfig,
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="gpt2"),
    }

    vision_config: dict | CMRCLIPVisionConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    video_token_pooling: Literal["cls", "cls_frames"] = "cls_frames"
    num_frame_tokens: int = 16
    projector_type: Literal["linear", "mlp"] = "mlp"
    freeze_vision: bool = True
    video_token_id: int = 0
    sentence_token_id: int = 0
    max_sentences: int | None = None
    initializer_range: float | int = 0.02

    def validate_architecture(self):
        if self.video_token_pooling not in ("cls", "cls_frames"):
            raise ValueError(f"video_token_pooling must be 'cls' or 'cls_frames', not {self.video_token_pooling!r}.")
        if self.projector_type not in ("linear", "mlp"):
            raise ValueError(f"projector_type must be 'linear' or 'mlp', not {self.projector_type!r}.")
        if self.video_token_pooling == "cls_frames" and not self.num_frame_tokens > 0:
            raise ValueError(f"num_frame_tokens must be positive with 'cls_frames', not {self.num_frame_tokens}.")

    @property
    def num_video_tokens(self) -> int:
        """Placeholder tokens the processor puts in front of every impression."""
        return 1 + (self.num_frame_tokens if self.video_token_pooling == "cls_frames" else 0)


__all__ = ["CMRTargetConfig"]
