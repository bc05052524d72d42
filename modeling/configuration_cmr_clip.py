"""Configurations of CMR-CLIP: the divided space-time video tower and the composite video-text model."""

import math
from typing import Literal

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig
from transformers.configuration_utils import PreTrainedConfig, SubConfigSpec


@strict
class CMRCLIPVisionConfig(PreTrainedConfig):
    r"""
    Configuration of [`CMRCLIPVisionModel`], the divided space-time transformer that embeds a cardiac MRI
    study given as one video of up to `num_frames` frames. The defaults are the released model's
    (ViT-B/16 at 224 px, 64 frames).

    Args:
        image_size (`int`): height and width of every frame, in pixels.
        patch_size (`int`): side of the square patches.
        num_channels (`int`): channels per frame (grey images are replicated to 3).
        num_frames (`int`): the most frames a study may have; fewer are accepted at run time.
        hidden_size (`int`): width of the transformer.
        num_hidden_layers (`int`): number of space-time blocks.
        num_attention_heads (`int`): heads of both the time and the space attention.
        intermediate_size (`int`): width of the MLP.
        hidden_act (`str`): MLP activation (`"gelu"` is the exact GELU of the release).
        layer_norm_eps (`float`): epsilon of every LayerNorm.
        qkv_bias (`bool`): whether the fused query-key-value projections have a bias.
        hidden_dropout_prob (`float`): dropout after attention and MLP outputs.
        attention_dropout (`float`): dropout on attention probabilities.
        initializer_range (`float`): standard deviation of the truncated normal initialisation.
        time_init (`str`): `"zeros"` starts every time attention as a no-op (as the release, so that a
            model initialised from an image ViT starts as that image model); `"normal"` initialises it
            like the space attention.
    """

    model_type = "cmr_clip_vision_model"
    base_config_key = "vision_config"

    image_size: int = 224
    patch_size: int = 16
    num_channels: int = 3
    num_frames: int = 64
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    layer_norm_eps: float | int = 1e-6
    qkv_bias: bool = True
    hidden_dropout_prob: float | int = 0.0
    attention_dropout: float | int = 0.0
    initializer_range: float | int = 0.02
    time_init: Literal["zeros", "normal"] = "zeros"

    def validate_architecture(self):
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be a multiple of num_attention_heads "
                f"({self.num_attention_heads})."
            )
        if self.image_size % self.patch_size != 0:
            raise ValueError(f"image_size ({self.image_size}) must be a multiple of patch_size ({self.patch_size}).")
        if self.time_init not in ("zeros", "normal"):
            raise ValueError(f"time_init must be 'zeros' or 'normal', not {self.time_init!r}.")

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


@strict
class CMRCLIPConfig(PreTrainedConfig):
    r"""
    Configuration of [`CMRCLIPModel`]: a video tower ([`CMRCLIPVisionConfig`]), any transformers text
    encoder (`text_config`, BERT by default) and the projections into the shared embedding space.

    Args:
        vision_config (`dict` or [`CMRCLIPVisionConfig`]): the video tower.
        text_config (`dict` or [`PreTrainedConfig`]): the text encoder; a dict needs a `model_type`.
        projection_dim (`int`): dimension of the shared embedding space.
        text_pooling (`str`): how the text tower's tokens become one vector: `"mean"` (attention-masked
            mean of the last hidden state, the release's choice for BERT), `"cls"` (first token) or
            `"pooler"` (the encoder's own `pooler_output`).
        projection_type (`str`): `"minimal"` (ReLU then Linear, as the release), `"linear"`, or `"mlp"`
            (Linear, GELU, Linear).
        temperature (`float`): the fixed contrastive temperature of the release (logits are cosine
            similarities divided by it); used when `learnable_logit_scale` is False.
        learnable_logit_scale (`bool`): learn the logit scale as CLIP does instead.
        logit_scale_init_value (`float`): initial log of the learnable scale (CLIP's log(1/0.07)).
        max_logit_scale (`float`): the learnable scale is clamped to at most this value (not its log).
        max_text_length (`int`): longer inputs are cut to this many tokens, as the release does.
        classifier_hidden_size (`int`): [`CMRCLIPForStudyClassification`] only: 0 for a linear head on the
            study embedding, otherwise the hidden width of a small MLP head.
        label_weights (`list[float]`, *optional*): [`CMRCLIPForStudyClassification`] only: per-label loss
            weights against class imbalance (positive-class weight per finding, or weight per class).
    """

    model_type = "cmr_clip"
    sub_configs_defaults = {
        "vision_config": CMRCLIPVisionConfig,
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="bert"),
    }

    vision_config: dict | CMRCLIPVisionConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    projection_dim: int = 512
    text_pooling: Literal["mean", "cls", "pooler"] = "mean"
    projection_type: Literal["minimal", "linear", "mlp"] = "minimal"
    temperature: float | int = 0.05
    learnable_logit_scale: bool = False
    logit_scale_init_value: float | int = math.log(1 / 0.07)
    max_logit_scale: float | int = 100.0
    max_text_length: int = 512
    initializer_range: float | int = 0.02
    classifier_hidden_size: int = 0
    label_weights: list | None = None

    def validate_architecture(self):
        if self.text_pooling not in ("mean", "cls", "pooler"):
            raise ValueError(f"text_pooling must be 'mean', 'cls' or 'pooler', not {self.text_pooling!r}.")
        if self.projection_type not in ("minimal", "linear", "mlp"):
            raise ValueError(
                f"projection_type must be 'minimal', 'linear' or 'mlp', not {self.projection_type!r}."
            )
        if not self.temperature > 0:
            raise ValueError(f"temperature must be positive, not {self.temperature}.")


__all__ = ["CMRCLIPVisionConfig", "CMRCLIPConfig"]
