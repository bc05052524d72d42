"""CMR-CLIP: a divided space-time video transformer for whole cardiac MRI studies, a text encoder for
report impressions, and the contrastive model that puts both in one embedding space.

The video tower follows the released model exactly (see `reference-model.md` in the project's shared
docs): frames are patch-embedded, a CLS token is prepended, and every block runs a time attention
(each patch with the same patch in every frame, plus CLS) whose output only feeds the input of a space
attention (each patch with the patches of its own frame, plus CLS); the CLS query attends to the whole
sequence in both.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Unpack

import torch
from torch import nn
from transformers import AutoModel, PreTrainedModel, ViTModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils import ModelOutput, TransformersKwargs, can_return_tuple
from transformers.utils.generic import merge_with_config_defaults
from transformers.utils.output_capturing import capture_outputs

from .configuration_cmr_clip import CMRCLIPConfig, CMRCLIPVisionConfig


@dataclass
class CMRCLIPVisionModelOutput(BaseModelOutputWithPooling):
    r"""
    last_hidden_state (`torch.FloatTensor` of shape `(batch_size, 1 + frames * patches, hidden_size)`):
        The final LayerNorm of every token; token `1 + f * patches + n` is patch `n` of frame `f`.
    pooler_output (`torch.FloatTensor` of shape `(batch_size, hidden_size)`):
        The CLS token of `last_hidden_state`: the study's video feature, before projection.
    hidden_states (`tuple(torch.FloatTensor)`, *optional*):
        The input of the first block and the output of every block (before the final LayerNorm).
    attentions (`tuple(torch.FloatTensor)`, *optional*, eager attention only):
        Space attention of the patch queries per block, `(batch_size, frames, heads, patches, 1 + patches)`;
        key 0 is CLS, key `1 + n` is patch `n` of the same frame.
    time_attentions (`tuple(torch.FloatTensor)`, *optional*, eager attention only):
        Time attention of the patch queries per block, `(batch_size, patches, heads, frames, 1 + frames)`;
        key 0 is CLS, key `1 + f` is the same patch in frame `f`.
    """

    time_attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class CMRCLIPOutput(ModelOutput):
    r"""
    loss (`torch.FloatTensor` of shape `(1,)`, *optional*, returned when `return_loss` is True):
        Symmetric contrastive (InfoNCE) loss over the batch's study-text pairs.
    logits_per_video (`torch.FloatTensor` of shape `(video_batch_size, text_batch_size)`):
        Scaled cosine similarities between every study and every text.
    logits_per_text (`torch.FloatTensor` of shape `(text_batch_size, video_batch_size)`):
        The transpose of `logits_per_video`.
    text_embeds (`torch.FloatTensor` of shape `(text_batch_size, projection_dim)`):
        L2-normalised text embeddings.
    video_embeds (`torch.FloatTensor` of shape `(video_batch_size, projection_dim)`):
        L2-normalised study embeddings.
    text_model_output (`BaseModelOutputWithPooling`): the text tower's output (pooled features projected).
    vision_model_output (`CMRCLIPVisionModelOutput`): the video tower's output (pooled features projected).
    """

    loss: torch.FloatTensor | None = None
    logits_per_video: torch.FloatTensor | None = None
    logits_per_text: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    video_embeds: torch.FloatTensor | None = None
    text_model_output: BaseModelOutputWithPooling | None = None
    vision_model_output: CMRCLIPVisionModelOutput | None = None

    def to_tuple(self) -> tuple[Any, ...]:
        return tuple(
            self[k] if k not in ("text_model_output", "vision_model_output") else getattr(self, k).to_tuple()
            for k in self.keys()
        )


def contrastive_loss(logits_per_text: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE: the matching pair of row i is column i, in both directions."""
    if logits_per_text.shape[0] != logits_per_text.shape[1]:
        raise ValueError(
            f"The contrastive loss needs one text per study; got {logits_per_text.shape[0]} texts and "
            f"{logits_per_text.shape[1]} studies."
        )
    targets = torch.arange(logits_per_text.shape[0], device=logits_per_text.device)
    text_loss = nn.functional.cross_entropy(logits_per_text, targets)
    video_loss = nn.functional.cross_entropy(logits_per_text.t(), targets)
    return text_loss + video_loss


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    attention_groups: int = 1,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax attention on (batch * groups, heads, length, head_dim) tensors.

    Returns the output as (batch * groups, length, heads, head_dim) and the weights as
    (batch, groups, heads, length, key_length). The output is computed from that very weights tensor, so
    a caller who keeps the returned attention maps can take gradients with respect to them.
    """
    attn_weights = torch.matmul(query, key.transpose(-1, -2)) * scaling
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask
    attn_weights = nn.functional.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query.dtype)
    attn_weights = nn.functional.dropout(attn_weights, p=dropout, training=module.training)
    attn_weights = attn_weights.unflatten(0, (-1, attention_groups))
    attn_output = torch.matmul(attn_weights.flatten(0, 1), value).transpose(1, 2).contiguous()
    return attn_output, attn_weights


CPU_EAGER_MAX_KEYS = 32
"""With `attn_implementation="sdpa"` on a CPU and without gradients, patch groups of at most this many keys (CLS +
group length: the time attention of 16 frames, the space attention of frames cut into at most 5 x 5 patches)
attend by plain matrix products (`eager_attention_forward`) instead of torch's SDPA kernel. On 2 cores of an AMD
EPYC the demo's video tower (17 keys per group) then embeds a batch of 64 studies 1.38x faster in float32 and
1.29x in bfloat16, measured in one process; at 50 keys and more SDPA is as fast or faster (0.85x for eager at 197
keys). Compiled (`torch.compile`), the CLS query takes the eager path there too, whatever its length."""


def _eager_without_weights(*args, **kwargs) -> tuple[torch.Tensor, None]:
    """`eager_attention_forward` in SDPA's place: its output, and no weights (SDPA returns none)."""
    return eager_attention_forward(*args, **kwargs)[0], None


def divided_attention(
    module: nn.Module, hidden_states: torch.Tensor, num_frames: int, along_time: bool, **kwargs
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """One divided attention of the video tower, shared by the time and the space attention modules.

    The CLS query attends to the whole sequence. Patch queries are grouped (by spatial position across
    frames for time attention, by frame for space attention) and each group attends to itself plus CLS.
    Returns, before the output projection, the CLS output `(batch, 1, width)`, the patch output in group
    order `(batch, groups, group_length, width)`, and the patch queries' attention weights (eager only) as
    `(batch, groups, heads, group_length, 1 + group_length)`.
    """
    batch, length, width = hidden_states.shape
    heads, head_dim = module.num_heads, module.head_dim
    attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
        module.config._attn_implementation, eager_attention_forward
    )
    dropout = module.dropout if module.training else 0.0

    qkv = module.qkv(hidden_states).view(batch, length, 3, heads, head_dim)
    patches = qkv[:, 1:].unflatten(1, (num_frames, -1))  # (batch, frames, patches, 3, heads, head_dim)
    if along_time:
        patches = patches.transpose(1, 2)
    groups, group_length = patches.shape[1:3]
    # Every group with CLS first, in one buffer (batch, groups, 1 + group_length, 3, heads, head_dim): the one
    # copy of q, k and v that backward keeps (the qkv output is freed). Its key and value rows also serve the
    # CLS query, read as one sequence of all groups: it holds CLS once per group, so all CLS rows but the
    # first are masked out. Every view below is of q, k and v, not of the buffer, so that backward sums their
    # gradients at that size.
    grouped = torch.cat([qkv[:, None, :1].expand(-1, groups, -1, -1, -1, -1), patches], dim=2)
    # (batch * groups, heads, 1 + group_length, head_dim) each
    query, key, value = grouped.flatten(0, 1).permute(2, 0, 3, 1, 4).unbind(0)

    def all_groups(tokens: torch.Tensor) -> torch.Tensor:  # (batch, heads, groups * (1 + group_length), head_dim)
        return tokens.unflatten(0, (batch, groups)).transpose(1, 2).flatten(2, 3)

    # The patch queries' attention is many tiny problems (one per group, 1 + group_length keys each). On a CPU
    # torch's SDPA kernel pays a fixed cost per problem that plain matrix products do not, so at inference short
    # groups take the eager path there (the same softmax attention; see CPU_EAGER_MAX_KEYS). Not in training:
    # backward would keep the attention weights, more memory than SDPA's recomputation.
    # The CLS query is one query a head over every group's keys. Compiled, its products fuse with their softmax and
    # beat SDPA's CPU kernel (the demo's tower, batch 63, bfloat16: 101 -> 92 ms); eagerly they first copy the
    # strided keys and values (float32 3 to 5 % slower, bfloat16 1 to 3 % faster), so there CLS keeps SDPA.
    cls_attention = patch_attention = attention_interface
    if (module.config._attn_implementation == "sdpa" and hidden_states.device.type == "cpu"
            and not torch.is_grad_enabled()):
        if 1 + group_length <= CPU_EAGER_MAX_KEYS:
            patch_attention = _eager_without_weights
        if torch.compiler.is_compiling():
            cls_attention = _eager_without_weights
    duplicates = torch.zeros(groups, 1 + group_length, dtype=grouped.dtype, device=grouped.device)
    duplicates[1:, 0] = float("-inf")
    cls_output, _ = cls_attention(
        module,
        query[::groups, :, :1],
        all_groups(key),
        all_groups(value),
        duplicates.view(1, 1, 1, -1),
        scaling=module.scale,
        dropout=dropout,
        **kwargs,
    )
    patch_output, patch_weights = patch_attention(
        module,
        query[:, :, 1:],
        key,
        value,
        None,
        scaling=module.scale,
        dropout=dropout,
        attention_groups=groups,
        **kwargs,
    )
    return cls_output.reshape(batch, 1, width), patch_output.reshape(batch, groups, group_length, width), patch_weights


class CMRCLIPDividedAttention(nn.Module):
    """Shared parts of the two attentions of a block: fused qkv, output projection, `divided_attention`.
    The time and space attentions are sibling subclasses, so that their outputs are recorded apart."""

    along_time: bool

    def __init__(self, config: CMRCLIPVisionConfig):
        super().__init__()
        self.config = config
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scale = self.head_dim**-0.5
        self.dropout = config.attention_dropout
        self.is_causal = False
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=config.qkv_bias)
        self.out_proj = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(
        self, hidden_states: torch.Tensor, num_frames: int, **kwargs: Unpack[TransformersKwargs]
    ) -> tuple[torch.Tensor, Any]:
        cls_output, patch_output, weights = divided_attention(
            self, hidden_states, num_frames, along_time=self.along_time, **kwargs
        )
        # Projected in group order (it is per token), so backward keeps the attention output only once.
        patch_output = self.out_proj(patch_output)
        if self.along_time:
            patch_output = patch_output.transpose(1, 2)
        return torch.cat([self.out_proj(cls_output), patch_output.flatten(1, 2)], dim=1), weights


class CMRCLIPTimeAttention(CMRCLIPDividedAttention):
    """Attention of every patch with the same patch position in every frame (and CLS)."""

    along_time = True

    def __init__(self, config: CMRCLIPVisionConfig):
        super().__init__(config)
        # time_init="zeros": a zero qkv (hence zero values) makes the time branch output exactly zero, so
        # the block starts as an image transformer block; gradients still reach qkv through out_proj.
        self.qkv._zero_init = config.time_init == "zeros"


class CMRCLIPSpaceAttention(CMRCLIPDividedAttention):
    """Attention of every patch with the patches of its own frame (and CLS)."""

    along_time = False


class CMRCLIPMLP(nn.Module):
    def __init__(self, config: CMRCLIPVisionConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.activation_fn = ACT2FN[config.hidden_act]
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.fc2(self.dropout(self.activation_fn(self.fc1(hidden_states)))))


class CMRCLIPVisionLayer(GradientCheckpointingLayer):
    """One space-time block. The time branch feeds the space branch's input; only the space branch
    is added to the residual stream (as in the release)."""

    def __init__(self, config: CMRCLIPVisionConfig):
        super().__init__()
        self.time_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.time_attn = CMRCLIPTimeAttention(config)
        self.space_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.space_attn = CMRCLIPSpaceAttention(config)
        self.mlp_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = CMRCLIPMLP(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor, num_frames: int, **kwargs) -> torch.Tensor:
        time_output, _ = self.time_attn(self.time_layer_norm(hidden_states), num_frames, **kwargs)
        space_output, _ = self.space_attn(self.space_layer_norm(hidden_states + time_output), num_frames, **kwargs)
        hidden_states = hidden_states + self.dropout(space_output)
        return hidden_states + self.mlp(self.mlp_layer_norm(hidden_states))


class CMRCLIPVisionEmbeddings(nn.Module):
    """Patch embedding of every frame, a CLS token, spatial and temporal position embeddings."""

    def __init__(self, config: CMRCLIPVisionConfig):
        super().__init__()
        self.config = config
        self.patch_embedding = nn.Conv2d(
            config.num_channels, config.hidden_size, kernel_size=config.patch_size, stride=config.patch_size
        )
        self.class_embedding = nn.Parameter(torch.zeros(config.hidden_size))
        self.position_embedding = nn.Parameter(torch.zeros(config.num_patches + 1, config.hidden_size))
        self.temporal_embedding = nn.Parameter(torch.zeros(config.num_frames, config.hidden_size))
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, pixel_values_videos: torch.Tensor) -> torch.Tensor:
        batch, frames, channels, height, width = pixel_values_videos.shape
        if frames > self.config.num_frames:
            raise ValueError(
                f"pixel_values_videos has {frames} frames but the model was built for at most "
                f"{self.config.num_frames} (config.vision_config.num_frames); sample fewer frames."
            )
        if channels != self.config.num_channels or height != self.config.image_size or width != self.config.image_size:
            raise ValueError(
                f"pixel_values_videos frames are {channels}x{height}x{width}; the model expects "
                f"{self.config.num_channels}x{self.config.image_size}x{self.config.image_size}. Resize them "
                "with the study processor configured for this model."
            )
        dtype = self.patch_embedding.weight.dtype
        patches = self.patch_embedding(pixel_values_videos.flatten(0, 1).to(dtype))  # (B*F, D, h, w)
        patches = patches.flatten(2).transpose(1, 2).reshape(batch, frames, -1, patches.shape[1])
        patches = patches + self.position_embedding[1:] + self.temporal_embedding[:frames, None]
        cls = (self.class_embedding + self.position_embedding[0]).expand(batch, 1, -1)
        return self.dropout(torch.cat([cls, patches.flatten(1, 2)], dim=1))


class CMRCLIPVisionEncoder(nn.Module):
    def __init__(self, config: CMRCLIPVisionConfig):
        super().__init__()
        self.layers = nn.ModuleList([CMRCLIPVisionLayer(config) for _ in range(config.num_hidden_layers)])
        self.gradient_checkpointing = False

    def forward(self, hidden_states: torch.Tensor, num_frames: int, **kwargs) -> torch.Tensor:
        for layer in self.layers:
            hidden_states = layer(hidden_states, num_frames, **kwargs)
        return hidden_states


class CMRCLIPPreTrainedModel(PreTrainedModel):
    config: CMRCLIPConfig
    base_model_prefix = "cmr_clip"
    main_input_name = "pixel_values_videos"
    input_modalities = ("video", "text")
    supports_gradient_checkpointing = True
    _no_split_modules = ["CMRCLIPVisionEmbeddings", "CMRCLIPVisionLayer"]
    _supports_sdpa = True
    _supports_attention_backend = True
    _can_record_outputs = {
        "hidden_states": CMRCLIPVisionLayer,
        "attentions": CMRCLIPSpaceAttention,
        "time_attentions": CMRCLIPTimeAttention,
    }

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            if getattr(module, "_zero_init", False):
                init.zeros_(module.weight)
            else:
                init.trunc_normal_(module.weight, std=self.config.initializer_range)
            if module.bias is not None:
                init.zeros_(module.bias)
        else:
            super()._init_weights(module)
        if isinstance(module, CMRCLIPVisionEmbeddings):
            std = module.config.initializer_range
            init.trunc_normal_(module.class_embedding, std=std)
            init.trunc_normal_(module.position_embedding, std=std)
            init.trunc_normal_(module.temporal_embedding, std=std)
        elif isinstance(module, CMRCLIPModel) and module.logit_scale is not None:
            init.constant_(module.logit_scale, module.config.logit_scale_init_value)


class CMRCLIPVisionModel(CMRCLIPPreTrainedModel):
    """The video tower alone: a study's frames in, token features and the CLS feature out."""

    config: CMRCLIPVisionConfig
    input_modalities = ("video",)
    _input_embed_layer = "patch_embedding"
    # Where inference spends its time: `cmr_clip.precision`'s `compile=True` compiles the modules that say so.
    compile_at_inference = True

    def __init__(self, config: CMRCLIPVisionConfig):
        super().__init__(config)
        self.embeddings = CMRCLIPVisionEmbeddings(config)
        self.encoder = CMRCLIPVisionEncoder(config)
        self.post_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.embeddings.patch_embedding

    @merge_with_config_defaults
    @capture_outputs(tie_last_hidden_states=False)
    def forward(
        self, pixel_values_videos: torch.Tensor | None = None, **kwargs: Unpack[TransformersKwargs]
    ) -> CMRCLIPVisionModelOutput:
        r"""
        pixel_values_videos (`torch.FloatTensor` of shape `(batch_size, frames, channels, height, width)`):
            Normalised frames of each study, `frames <= config.num_frames`; see `CMRStudyProcessor`.
        """
        if pixel_values_videos is None:
            raise ValueError("pixel_values_videos is required: a (batch, frames, 3, height, width) tensor.")
        if pixel_values_videos.dim() != 5:
            raise ValueError(
                f"pixel_values_videos must have 5 dimensions (batch, frames, channels, height, width), "
                f"got shape {tuple(pixel_values_videos.shape)}."
            )
        num_frames = pixel_values_videos.shape[1]
        hidden_states = self.embeddings(pixel_values_videos)
        hidden_states = self.encoder(hidden_states, num_frames, **kwargs)
        last_hidden_state = self.post_layernorm(hidden_states)
        return CMRCLIPVisionModelOutput(last_hidden_state=last_hidden_state, pooler_output=last_hidden_state[:, 0])


def vision_config_from_vit(vit_config, num_frames: int, **overrides) -> CMRCLIPVisionConfig:
    """A video tower config with the dimensions of a transformers `ViTConfig`."""
    return CMRCLIPVisionConfig(
        image_size=vit_config.image_size,
        patch_size=vit_config.patch_size,
        num_channels=vit_config.num_channels,
        num_frames=num_frames,
        hidden_size=vit_config.hidden_size,
        num_hidden_layers=vit_config.num_hidden_layers,
        num_attention_heads=vit_config.num_attention_heads,
        intermediate_size=vit_config.intermediate_size,
        hidden_act=vit_config.hidden_act,
        layer_norm_eps=vit_config.layer_norm_eps,
        qkv_bias=vit_config.qkv_bias,
        **overrides,
    )


@torch.no_grad()
def load_vit_weights(video_tower: CMRCLIPVisionModel, vit: PreTrainedModel) -> None:
    """Copy an image ViT's weights into the spatial parts of the video tower (see
    `CMRCLIPModel.from_text_vision_pretrained`)."""
    vit_state = vit.state_dict()
    embeddings = video_tower.embeddings
    embeddings.class_embedding.copy_(vit_state["embeddings.cls_token"].reshape(-1))
    embeddings.position_embedding.copy_(vit_state["embeddings.position_embeddings"][0])
    embeddings.temporal_embedding.zero_()
    embeddings.patch_embedding.weight.copy_(vit_state["embeddings.patch_embeddings.projection.weight"])
    embeddings.patch_embedding.bias.copy_(vit_state["embeddings.patch_embeddings.projection.bias"])
    for index, layer in enumerate(video_tower.encoder.layers):
        prefix = f"layers.{index}."
        for kind in ("weight", "bias"):
            qkv = [vit_state.get(f"{prefix}attention.{p}_proj.{kind}") for p in "qkv"]
            if all(t is not None for t in qkv):
                getattr(layer.space_attn.qkv, kind).copy_(torch.cat(qkv))
            getattr(layer.space_attn.out_proj, kind).copy_(vit_state[f"{prefix}attention.o_proj.{kind}"])
            getattr(layer.space_layer_norm, kind).copy_(vit_state[f"{prefix}layernorm_before.{kind}"])
            getattr(layer.time_layer_norm, kind).copy_(vit_state[f"{prefix}layernorm_before.{kind}"])
            getattr(layer.mlp_layer_norm, kind).copy_(vit_state[f"{prefix}layernorm_after.{kind}"])
            getattr(layer.mlp.fc1, kind).copy_(vit_state[f"{prefix}mlp.fc1.{kind}"])
            getattr(layer.mlp.fc2, kind).copy_(vit_state[f"{prefix}mlp.fc2.{kind}"])
        # The time attention starts as a no-op: zero values give a zero output.
        layer.time_attn.qkv.weight.zero_()
        if layer.time_attn.qkv.bias is not None:
            layer.time_attn.qkv.bias.zero_()
        layer.time_attn.out_proj.bias.zero_()
    video_tower.post_layernorm.weight.copy_(vit_state["layernorm.weight"])
    video_tower.post_layernorm.bias.copy_(vit_state["layernorm.bias"])


def build_projection(kind: str, in_dim: int, out_dim: int) -> nn.Module:
    """The projection into the shared space. `minimal` keeps the release's module indices (ReLU at 0)."""
    if kind == "minimal":
        return nn.Sequential(nn.ReLU(), nn.Linear(in_dim, out_dim))
    if kind == "linear":
        return nn.Linear(in_dim, out_dim)
    if kind == "mlp":
        return nn.Sequential(nn.Linear(in_dim, in_dim), nn.GELU(), nn.Linear(in_dim, out_dim))
    raise ValueError(f"Unknown projection_type {kind!r}; use 'minimal', 'linear' or 'mlp'.")


def build_text_model(config: CMRCLIPConfig) -> PreTrainedModel:
    """The text tower from `config.text_config`, without a pooler unless pooler pooling needs one (an
    unused pooler leaves parameters without gradients, which DDP rejects)."""
    kwargs = {}
    if config.text_config.model_type in ("bert", "roberta", "xlm-roberta", "camembert", "electra", "ernie"):
        kwargs["add_pooling_layer"] = config.text_pooling == "pooler"
    return AutoModel.from_config(config.text_config, **kwargs)


class CMRCLIPModel(CMRCLIPPreTrainedModel):
    """CMR-CLIP: study videos and report impressions embedded in one space."""

    config: CMRCLIPConfig
    main_input_name = "input_ids"
    _checkpoint_conversion_mapping = {}

    def __init__(self, config: CMRCLIPConfig):
        super().__init__(config)
        self.vision_model = CMRCLIPVisionModel._from_config(config.vision_config)
        self.text_model = build_text_model(config)
        text_width = config.text_config.hidden_size
        self.visual_projection = build_projection(
            config.projection_type, config.vision_config.hidden_size, config.projection_dim
        )
        self.text_projection = build_projection(config.projection_type, text_width, config.projection_dim)
        if config.learnable_logit_scale:
            self.logit_scale = nn.Parameter(torch.tensor(config.logit_scale_init_value))
        else:
            self.logit_scale = None
        self.post_init()

    @classmethod
    def from_text_vision_pretrained(
        cls,
        text_model_name_or_path: str,
        vision_model_name_or_path: str | None = None,
        num_frames: int = 64,
        vision_config: CMRCLIPVisionConfig | dict | None = None,
        **config_kwargs,
    ) -> "CMRCLIPModel":
        """A fresh CMR-CLIP whose text tower is a pretrained encoder and, optionally, whose video tower
        starts from a pretrained image ViT (transformers `ViTModel`, a Hub name or a local directory),
        the way the release started from ImageNet ViT-B/16.

        The ViT's patch embedding, position embedding, CLS token and blocks initialise the spatial parts;
        the temporal embedding starts at zero and every time attention as a no-op, so on a single frame
        the new video tower computes exactly what the ViT computed. Projections are fresh.
        """
        text_model = AutoModel.from_pretrained(text_model_name_or_path)
        vit = None
        if vision_model_name_or_path is not None:
            vit = ViTModel.from_pretrained(vision_model_name_or_path)
            vision_config = vision_config_from_vit(vit.config, num_frames=num_frames, time_init="zeros")
        elif vision_config is None:
            vision_config = CMRCLIPVisionConfig(num_frames=num_frames)
        config = CMRCLIPConfig(vision_config=vision_config, text_config=text_model.config, **config_kwargs)
        model = cls(config)
        missing, _ = model.text_model.load_state_dict(text_model.state_dict(), strict=False)
        if missing:
            raise ValueError(f"{text_model_name_or_path} lacks text tower weights: {missing[:10]}")
        if vit is not None:
            load_vit_weights(model.vision_model, vit)
        return model

    def get_input_embeddings(self) -> nn.Module:
        return self.text_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.text_model.set_input_embeddings(value)

    def logit_scale_value(self) -> torch.Tensor:
        """The factor that turns cosine similarities into logits (1/temperature, or the learned scale)."""
        if self.logit_scale is None:
            return torch.tensor(1.0 / self.config.temperature)
        return self.logit_scale.exp().clamp(max=self.config.max_logit_scale)

    @can_return_tuple
    def get_video_features(
        self, pixel_values_videos: torch.Tensor, **kwargs: Unpack[TransformersKwargs]
    ) -> CMRCLIPVisionModelOutput:
        r"""
        Returns the video tower's output whose `pooler_output` is the projected, unnormalised study
        embedding `(batch_size, projection_dim)`.
        """
        vision_outputs = self.vision_model(pixel_values_videos=pixel_values_videos, return_dict=True, **kwargs)
        vision_outputs.pooler_output = self.visual_projection(vision_outputs.pooler_output)
        return vision_outputs

    @can_return_tuple
    def get_text_features(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutputWithPooling:
        r"""
        Returns the text tower's output whose `pooler_output` is the projected, unnormalised text
        embedding `(batch_size, projection_dim)`, pooled as `config.text_pooling` says.
        """
        max_length = self.config.max_text_length
        if input_ids.shape[1] > max_length:
            input_ids = input_ids[:, :max_length]
            attention_mask = attention_mask[:, :max_length] if attention_mask is not None else None
            token_type_ids = token_type_ids[:, :max_length] if token_type_ids is not None else None
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        text_kwargs = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        text_outputs = self.text_model(
            input_ids=input_ids, attention_mask=attention_mask, return_dict=True, **text_kwargs, **kwargs
        )
        pooled = self._pool_text(text_outputs, attention_mask)
        return BaseModelOutputWithPooling(
            last_hidden_state=text_outputs.last_hidden_state,
            pooler_output=self.text_projection(pooled),
            hidden_states=getattr(text_outputs, "hidden_states", None),
            attentions=getattr(text_outputs, "attentions", None),
        )

    def _pool_text(self, text_outputs: Any, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = text_outputs.last_hidden_state
        if self.config.text_pooling == "mean":
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        if self.config.text_pooling == "cls":
            return hidden[:, 0]
        return text_outputs.pooler_output

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values_videos: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        return_loss: bool | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> CMRCLIPOutput:
        r"""
        input_ids (`torch.LongTensor` of shape `(text_batch_size, sequence_length)`): tokenised impressions.
        pixel_values_videos (`torch.FloatTensor` of shape `(video_batch_size, frames, channels, height, width)`):
            the studies' frames.
        return_loss (`bool`, *optional*): return the symmetric contrastive loss (pairs on the diagonal).
        """
        vision_outputs = self.get_video_features(pixel_values_videos=pixel_values_videos, **kwargs)
        text_outputs = self.get_text_features(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, **kwargs
        )
        video_embeds = nn.functional.normalize(vision_outputs.pooler_output, dim=-1)
        text_embeds = nn.functional.normalize(text_outputs.pooler_output, dim=-1)
        scale = self.logit_scale_value().to(text_embeds.device, text_embeds.dtype)
        logits_per_text = text_embeds @ video_embeds.t() * scale
        loss = contrastive_loss(logits_per_text) if return_loss else None
        return CMRCLIPOutput(
            loss=loss,
            logits_per_video=logits_per_text.t(),
            logits_per_text=logits_per_text,
            text_embeds=text_embeds,
            video_embeds=video_embeds,
            text_model_output=text_outputs,
            vision_model_output=vision_outputs,
        )


def study_classification_loss(
    problem_type: str, logits: torch.Tensor, labels: torch.Tensor, label_weights: list[float] | None = None
) -> torch.Tensor:
    """Cross-entropy (single-label; `label_weights` per class), binary cross-entropy (multi-label; positive
    weight per finding) or mean squared error (regression) of `(batch, num_labels)` logits."""
    weight = torch.tensor(label_weights, dtype=logits.dtype, device=logits.device) if label_weights else None
    if problem_type == "single_label_classification":
        return nn.functional.cross_entropy(logits, labels.long().view(-1), weight=weight)
    if problem_type == "multi_label_classification":
        return nn.functional.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype), pos_weight=weight)
    if problem_type == "regression":
        return nn.functional.mse_loss(logits.view(labels.shape[0], -1), labels.to(logits.dtype).view(labels.shape[0], -1))
    raise ValueError(
        f"Unknown problem_type {problem_type!r}; use 'single_label_classification', "
        "'multi_label_classification' or 'regression'."
    )


@dataclass
class CMRCLIPStudyClassifierOutput(ModelOutput):
    """Output of `CMRCLIPForStudyClassification`: `loss` (with `labels`), `logits` `(batch, num_labels)` and
    the projected, unnormalised study embedding the head saw."""

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    study_embeds: torch.FloatTensor | None = None


class CMRCLIPForStudyClassification(CMRCLIPPreTrainedModel):
    """The video tower of CMR-CLIP with a classification head on the study embedding.

    Takes a `CMRCLIPConfig`: `CMRCLIPForStudyClassification.from_pretrained(cmr_clip_dir, num_labels=...,
    problem_type=..., id2label=...)` loads `vision_model.*` and `visual_projection.*` from a trained
    `CMRCLIPModel` checkpoint, ignores the text tower and starts the head fresh. `config.problem_type`:
    `single_label_classification` (cross-entropy), `multi_label_classification` (one logit per finding,
    binary cross-entropy) or `regression` (mean squared error; e.g. LVEF). `config.label_weights`, a list
    with one weight per label, counters class imbalance: the positive-class weight of each finding
    (multi-label) or the weight of each class (single-label). `config.classifier_hidden_size` > 0 gives a small MLP head.

    LoRA (PEFT) target module names: in the video tower `qkv` and `out_proj` (space and time attention,
    fused query/key/value and output), `fc1` and `fc2` (MLP); put the head, `classifier`, in
    `modules_to_save`. In `CMRCLIPModel`'s BERT text tower the names are `query`, `key`, `value`, `dense`.
    """

    _keys_to_ignore_on_load_unexpected = [r"^text_model\.", r"^text_projection\.", r"^logit_scale"]

    def __init__(self, config: CMRCLIPConfig):
        # `id2label` alone is enough to name the classes; keep `label2id` its inverse.
        config.label2id = {name: int(index) for index, name in config.id2label.items()}
        super().__init__(config)
        self.num_labels = config.num_labels
        self.vision_model = CMRCLIPVisionModel._from_config(config.vision_config)
        self.visual_projection = build_projection(
            config.projection_type, config.vision_config.hidden_size, config.projection_dim
        )
        hidden = config.classifier_hidden_size
        if hidden > 0:
            self.classifier = nn.Sequential(
                nn.Linear(config.projection_dim, hidden), nn.GELU(), nn.Linear(hidden, config.num_labels)
            )
        else:
            self.classifier = nn.Linear(config.projection_dim, config.num_labels)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.vision_model.get_input_embeddings()

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        problem = self.config.problem_type
        if problem is None:
            problem = "regression" if self.num_labels == 1 else "single_label_classification"
        return study_classification_loss(problem, logits, labels, self.config.label_weights)

    @can_return_tuple
    def forward(
        self,
        pixel_values_videos: torch.FloatTensor,
        labels: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> CMRCLIPStudyClassifierOutput:
        r"""
        pixel_values_videos (`torch.FloatTensor` of shape `(batch_size, frames, channels, height, width)`):
            the studies' frames.
        labels (`torch.Tensor`, *optional*): class indices `(batch_size,)`, multi-hot `(batch_size,
            num_labels)` or regression targets, as `config.problem_type` says.
        """
        vision_outputs = self.vision_model(pixel_values_videos=pixel_values_videos, return_dict=True, **kwargs)
        study_embeds = self.visual_projection(vision_outputs.pooler_output)
        logits = self.classifier(study_embeds)
        loss = self._loss(logits, labels) if labels is not None else None
        return CMRCLIPStudyClassifierOutput(loss=loss, logits=logits, study_embeds=study_embeds)



__all__ = [
    "CMRCLIPForStudyClassification",
    "CMRCLIPModel",
    "CMRCLIPOutput",
    "CMRCLIPPreTrainedModel",
    "CMRCLIPStudyClassifierOutput",
    "CMRCLIPVisionModel",
    "CMRCLIPVisionModelOutput",
    "contrastive_loss",
    "study_classification_loss",
]
