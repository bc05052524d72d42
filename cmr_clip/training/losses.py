"""Losses over the global batch: the contrastive loss with embeddings gathered from every process (with
gradients), and the language-model loss's token count summed over processes.

Every process computes the same loss over the (world x local batch) similarity matrix. The gather's
backward sums each process's gradient for its own rows, and DDP then averages over processes, so the
parameters get exactly the gradient of the single-process loss on the whole global batch: the effective
number of negatives grows with the number of GPUs.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch.distributed.nn.functional import all_gather

from ..modeling.modeling_cmr_clip import contrastive_loss


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate `tensor` from every process in rank order, keeping the autograd graph."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    return torch.cat(all_gather(tensor.contiguous()), dim=0)


def gathered_contrastive_loss(
    text_embeds: torch.Tensor, video_embeds: torch.Tensor, logit_scale: torch.Tensor
) -> torch.Tensor:
    """Symmetric InfoNCE over all processes' normalised embeddings (row i of text pairs with row i of video)."""
    all_text = gather_with_grad(text_embeds)
    all_video = gather_with_grad(video_embeds)
    logits_per_text = all_text @ all_video.T * logit_scale
    return contrastive_loss(logits_per_text)


def tokens_per_process(labels: torch.Tensor) -> torch.Tensor:
    """The global batch's number of predicted tokens (next-token targets that are not -100) over the number
    of processes. A process's summed token loss divided by it, averaged over processes as DDP and FSDP
    average gradients, is the token mean over the global batch: what one process computes on the whole
    batch, however the tokens fall across processes."""
    count = (labels[:, 1:] != -100).sum().float()
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(count)
        count = count / dist.get_world_size()
    return count
