"""The released CMR-CLIP video tower written the way the release computes it: the baseline of video_encoder.py.

A straightforward re-implementation from the project's specification (`reference-model.md` in the shared docs):
a frozen-in-time style divided space-time transformer in float32, whose attentions take an explicit q.k softmax
per group after einops-style rearranges (spelled here as the reshape and permute that `einops.rearrange` and
`einops.repeat` perform): heads folded into the batch, the CLS query against every key, patch queries regrouped by
frame or by spatial position, the CLS key and value repeated into every group. Its modules and parameters carry
the release's names and shapes (`patch_embed.proj`, `cls_token`, `pos_embed`, `temporal_embed`,
`blocks.i.{norm1, attn, norm3, timeattn, norm2, mlp}`, `norm`), so the release's `video_model.*` weights load as
they are, and `load_tower_weights` takes a `CMRCLIPVisionModel`'s through the converter's key map: the comparison
with our tower is like for like (tests/test_benchmarks.py checks both give the fixture's features).

    baseline = ReleaseVideoTower.from_config(tower.config)
    baseline.load_tower_weights(tower.state_dict())
    cls = baseline(videos)  # (B, D): the CLS token after the final LayerNorm
"""

import torch
from torch import nn

from cmr_clip import CMRCLIPVisionConfig
from cmr_clip.modeling.convert_original_checkpoint import original_key

LAYER_NORM_EPS = 1e-6


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Softmax attention on (batch, length, dim) tensors whose queries are already scaled."""
    weights = torch.einsum("bid,bjd->bij", q, k).softmax(dim=-1)
    return torch.einsum("bij,bjd->bid", weights, v)


class VarAttention(nn.Module):
    """One divided attention: the CLS query sees the whole sequence, patch queries only their own group and CLS."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, frames: int, along_time: bool) -> torch.Tensor:
        b, n, _ = x.shape
        h = self.num_heads
        # 'b n (h d) -> (b h) n d' for each of q, k, v
        q, k, v = (t.reshape(b, n, h, -1).permute(0, 2, 1, 3).reshape(b * h, n, -1) for t in self.qkv(x).chunk(3, dim=-1))
        q = q * self.scale
        (cls_q, q_), (cls_k, k_), (cls_v, v_) = ((t[:, :1], t[:, 1:]) for t in (q, k, v))
        cls_out = attend(cls_q, k, v)
        q_, k_, v_ = (to_groups(t, frames, along_time) for t in (q_, k_, v_))
        # 'b () d -> (b r) () d': the CLS key and value copied into each of the r groups
        r = q_.shape[0] // cls_k.shape[0]
        cls_k, cls_v = (t[:, None].expand(-1, r, -1, -1).reshape(-1, 1, t.shape[-1]) for t in (cls_k, cls_v))
        out = attend(q_, torch.cat((cls_k, k_), dim=1), torch.cat((cls_v, v_), dim=1))
        out = torch.cat((cls_out, from_groups(out, b * h, along_time)), dim=1)
        # '(b h) n d -> b n (h d)'
        out = out.reshape(b, h, n, -1).permute(0, 2, 1, 3).reshape(b, n, -1)
        return self.proj(out)


def to_groups(t: torch.Tensor, frames: int, along_time: bool) -> torch.Tensor:
    """'b (f n) d -> (b n) f d' (time) or 'b (f n) d -> (b f) n d' (space)."""
    b, _, d = t.shape
    t = t.reshape(b, frames, -1, d)
    if along_time:
        t = t.permute(0, 2, 1, 3)
    return t.reshape(-1, t.shape[2], d)


def from_groups(t: torch.Tensor, batch: int, along_time: bool) -> torch.Tensor:
    """The inverse of `to_groups`: '(b n) f d -> b (f n) d' (time) or '(b f) n d -> b (f n) d' (space)."""
    _, length, d = t.shape
    t = t.reshape(batch, -1, length, d)
    if along_time:
        t = t.permute(0, 2, 1, 3)
    return t.reshape(batch, -1, d)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SpaceTimeBlock(nn.Module):
    """Time attention feeds the space attention's input; the residual adds the space attention alone."""

    def __init__(self, dim: int, num_heads: int, mlp_hidden: int, qkv_bias: bool, eps: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = VarAttention(dim, num_heads, qkv_bias)
        self.timeattn = VarAttention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, mlp_hidden)
        self.norm3 = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        time_residual = x + self.timeattn(self.norm3(x), frames, along_time=True)
        x = x + self.attn(self.norm1(time_residual), frames, along_time=False)
        return x + self.mlp(self.norm2(x))


class ReleaseVideoTower(nn.Module):
    """The release's SpaceTimeTransformer: (B, F, C, H, W) frames to the CLS token after the final LayerNorm."""

    def __init__(self, img_size: int, patch_size: int, num_frames: int, embed_dim: int, depth: int, num_heads: int,
                 mlp_hidden: int, in_chans: int = 3, qkv_bias: bool = True, eps: float = LAYER_NORM_EPS):
        super().__init__()
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        patches = (img_size // patch_size) ** 2
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, patches + 1, embed_dim))
        self.temporal_embed = nn.Parameter(torch.zeros(1, num_frames, embed_dim))
        self.blocks = nn.ModuleList(
            SpaceTimeBlock(embed_dim, num_heads, mlp_hidden, qkv_bias, eps) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=eps)

    @classmethod
    def from_config(cls, config: CMRCLIPVisionConfig) -> "ReleaseVideoTower":
        """The release's tower at the dimensions of one of our video tower configs."""
        return cls(config.image_size, config.patch_size, config.num_frames, config.hidden_size,
                   config.num_hidden_layers, config.num_attention_heads, config.intermediate_size,
                   config.num_channels, config.qkv_bias, config.layer_norm_eps)

    def load_tower_weights(self, tower_state: dict[str, torch.Tensor]) -> None:
        """Load a `CMRCLIPVisionModel` state dict, renamed by the converter's key map (`original_key`)."""
        shapes = {k: v.shape for k, v in self.state_dict().items()}
        renamed = {original_key(f"vision_model.{k}").removeprefix("video_model."): v for k, v in tower_state.items()}
        self.load_state_dict({k: v.reshape(shapes[k]) if k in shapes else v for k, v in renamed.items()})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, frames = x.shape[:2]
        x = self.patch_embed.proj(x.flatten(0, 1))  # every frame: (b f) d h w
        x = x.flatten(2).transpose(2, 1).reshape(b, -1, x.shape[1])  # 'b (f n) d', frame by frame
        patches = self.pos_embed.shape[1] - 1
        tile_pos_embed = self.pos_embed[:, 1:].repeat(1, frames, 1)
        tile_temporal_embed = self.temporal_embed[:, :frames].repeat_interleave(patches, 1)
        x = torch.cat((self.cls_token.expand(b, -1, -1), x), dim=1)
        x = x + torch.cat((self.pos_embed[:, :1], tile_pos_embed + tile_temporal_embed), dim=1)
        for block in self.blocks:
            x = block(x, frames)
        return self.norm(x)[:, 0]
