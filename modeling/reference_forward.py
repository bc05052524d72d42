"""The released CMR-CLIP's forward pass, recomputed from its raw state dict with plain torch functions.

This is the independent side of the conversion check (`convert_original_checkpoint.conversion_check`): it reads
the checkpoint under its ORIGINAL key names (`video_model.*`, `text_model.*`, `vid_proj.1.*`, `txt_proj.1.*`)
and follows the published specification of the network (divided space-time attention with a CLS token that
sees the whole sequence; a BERT text tower with masked mean pooling; ReLU + Linear projections), sharing no
code with `CMRCLIPModel`. It is written for clarity, not speed, and is never used for inference.

    video = reference_video_features(state_dict, pixels.double(), num_heads=12)  # (B, D): CLS before projection
    text = reference_text_features(state_dict, ids, mask, num_heads=12)          # (B, D_text): masked mean
    video_embeds, text_embeds = reference_project(state_dict, video, text)      # (B, projection_dim)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

VIDEO_LAYER_NORM_EPS = 1e-6


def reference_video_features(state_dict: dict[str, torch.Tensor], pixels: torch.Tensor, num_heads: int,
                             eps: float = VIDEO_LAYER_NORM_EPS) -> torch.Tensor:
    """The video tower's CLS output (B, D) for `pixels` (B, F, C, H, W), F at most the model's frames, computed
    in the dtype of `pixels`."""
    weight = state_dict["video_model.patch_embed.proj.weight"]
    batch, frames = pixels.shape[:2]
    patch = weight.shape[-1]
    dtype = pixels.dtype
    patches = F.conv2d(pixels.flatten(0, 1), weight.to(dtype), state_dict["video_model.patch_embed.proj.bias"].to(dtype),
                       stride=patch)
    patches = patches.flatten(2).transpose(1, 2)  # (B*F, N, D), patch by patch inside a frame
    per_frame, width = patches.shape[1:]
    pos = state_dict["video_model.pos_embed"].reshape(-1, width).to(dtype)
    temporal = state_dict["video_model.temporal_embed"].reshape(-1, width)[:frames].to(dtype)
    patches = patches.reshape(batch, frames, per_frame, width) + pos[1:][None, None] + temporal[None, :, None]
    cls = (state_dict["video_model.cls_token"].reshape(1, 1, width).to(dtype) + pos[:1][None]).expand(batch, 1, width)
    x = torch.cat([cls, patches.reshape(batch, frames * per_frame, width)], dim=1)
    depth = 1 + max(int(key.split(".")[2]) for key in state_dict if key.startswith("video_model.blocks."))
    for index in range(depth):
        x = _space_time_block(state_dict, f"video_model.blocks.{index}.", x, frames, per_frame, num_heads, eps)
    x = _layer_norm(state_dict, "video_model.norm", x, eps)
    return x[:, 0]


def _space_time_block(sd, prefix: str, x, frames: int, per_frame: int, heads: int, eps: float) -> torch.Tensor:
    # The time branch only feeds the space branch's input; the residual adds the space branch alone.
    t = _divided_attention(sd, prefix + "timeattn", _layer_norm(sd, prefix + "norm3", x, eps), frames, per_frame, heads, "time")
    s = _divided_attention(sd, prefix + "attn", _layer_norm(sd, prefix + "norm1", x + t, eps), frames, per_frame, heads, "space")
    x = x + s
    hidden = F.gelu(_linear(sd, prefix + "mlp.fc1", _layer_norm(sd, prefix + "norm2", x, eps)))
    return x + _linear(sd, prefix + "mlp.fc2", hidden)


def _divided_attention(sd, prefix: str, x, frames: int, per_frame: int, heads: int, axis: str) -> torch.Tensor:
    """CLS attends to every token; a patch token attends to CLS and to the tokens sharing its spatial position
    (axis "time": F + 1 keys) or its frame (axis "space": N + 1 keys)."""
    batch, length, width = x.shape
    head_dim = width // heads
    q, k, v = _linear(sd, prefix + ".qkv", x).reshape(batch, length, 3, heads, head_dim).permute(2, 0, 3, 1, 4)
    scale = head_dim**-0.5
    cls_out = torch.softmax(q[:, :, :1] @ k.transpose(-1, -2) * scale, dim=-1) @ v  # (B, h, 1, d)

    def grouped(tensor):  # patch tokens (B, h, F*N, d) -> groups (B, h, G, members, d)
        tensor = tensor[:, :, 1:].reshape(batch, heads, frames, per_frame, head_dim)
        return tensor.transpose(2, 3) if axis == "time" else tensor

    groups = frames if axis == "space" else per_frame
    qg, kg, vg = grouped(q), grouped(k), grouped(v)
    cls_k = k[:, :, :1, None].expand(batch, heads, groups, 1, head_dim)
    cls_v = v[:, :, :1, None].expand(batch, heads, groups, 1, head_dim)
    kg, vg = torch.cat([cls_k, kg], dim=3), torch.cat([cls_v, vg], dim=3)
    patch_out = torch.softmax(qg @ kg.transpose(-1, -2) * scale, dim=-1) @ vg
    if axis == "time":
        patch_out = patch_out.transpose(2, 3)  # back to frame by frame, patch by patch
    patch_out = patch_out.reshape(batch, heads, frames * per_frame, head_dim)
    out = torch.cat([cls_out, patch_out], dim=2).transpose(1, 2).reshape(batch, length, width)
    return _linear(sd, prefix + ".proj", out)


def reference_text_features(state_dict: dict[str, torch.Tensor], input_ids: torch.Tensor, attention_mask: torch.Tensor,
                            num_heads: int, eps: float = 1e-12, pooling: str = "mean", max_length: int = 512,
                            dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """A BERT encoder's features (B, D), computed in `dtype`: the last hidden state mean-pooled over the tokens
    the mask keeps (the release's choice for BERT names), its first token ("cls"), or the BERT pooler ("pooler")."""
    input_ids, attention_mask = input_ids[:, :max_length], attention_mask[:, :max_length]
    prefix = "text_model.embeddings."
    positions = torch.arange(input_ids.shape[1])
    x = (state_dict[prefix + "word_embeddings.weight"][input_ids].to(dtype)
         + state_dict[prefix + "position_embeddings.weight"][positions][None].to(dtype)
         + state_dict[prefix + "token_type_embeddings.weight"][0].to(dtype))
    x = _layer_norm(state_dict, prefix + "LayerNorm", x, eps)
    bias = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
    depth = 1 + max(int(key.split(".")[3]) for key in state_dict if key.startswith("text_model.encoder.layer."))
    for index in range(depth):
        x = _bert_layer(state_dict, f"text_model.encoder.layer.{index}.", x, bias, num_heads, eps)
    if pooling == "cls":
        return x[:, 0]
    if pooling == "pooler":
        return torch.tanh(_linear(state_dict, "text_model.pooler.dense", x[:, 0]))
    keep = attention_mask[..., None].to(x.dtype)
    return (x * keep).sum(1) / keep.sum(1).clamp(min=1.0)


def _bert_layer(sd, prefix: str, x, bias, heads: int, eps: float) -> torch.Tensor:
    batch, length, width = x.shape
    head_dim = width // heads

    def split(name):
        return _linear(sd, prefix + f"attention.self.{name}", x).reshape(batch, length, heads, head_dim).transpose(1, 2)

    scores = split("query") @ split("key").transpose(-1, -2) * head_dim**-0.5 + bias
    context = (torch.softmax(scores, dim=-1) @ split("value")).transpose(1, 2).reshape(batch, length, width)
    x = _layer_norm(sd, prefix + "attention.output.LayerNorm", x + _linear(sd, prefix + "attention.output.dense", context), eps)
    hidden = F.gelu(_linear(sd, prefix + "intermediate.dense", x))
    return _layer_norm(sd, prefix + "output.LayerNorm", x + _linear(sd, prefix + "output.dense", hidden), eps)


def reference_project(state_dict: dict[str, torch.Tensor], video_features: torch.Tensor,
                      text_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The release's "minimal" projections: ReLU, then Linear, on both sides (unnormalised)."""
    return (_linear(state_dict, "vid_proj.1", torch.relu(video_features)),
            _linear(state_dict, "txt_proj.1", torch.relu(text_features)))


# Weights are cast to the activations' dtype one at a time, so a float64 check never holds a float64 copy of the
# whole checkpoint.
def _linear(sd, prefix: str, x) -> torch.Tensor:
    bias = sd.get(prefix + ".bias")
    return F.linear(x, sd[prefix + ".weight"].to(x.dtype), None if bias is None else bias.to(x.dtype))


def _layer_norm(sd, prefix: str, x, eps: float) -> torch.Tensor:
    return F.layer_norm(x, x.shape[-1:], sd[prefix + ".weight"].to(x.dtype), sd[prefix + ".bias"].to(x.dtype), eps)
