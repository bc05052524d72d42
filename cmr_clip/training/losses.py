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
from torch import nn
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


def gather_keys(keys: torch.Tensor) -> torch.Tensor:
    """Concatenate an integer tensor (n, ...) from every process in rank order; a second dimension that differs
    between processes is padded with -1 to the widest."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return keys
    if keys.dim() > 1:
        width = torch.tensor([keys.shape[1]], device=keys.device)
        dist.all_reduce(width, op=dist.ReduceOp.MAX)
        keys = nn.functional.pad(keys, (0, int(width) - keys.shape[1]), value=-1)
    gathered = [torch.empty_like(keys) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, keys.contiguous())
    return torch.cat(gathered, dim=0)


def multi_positive_nce(logits: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """Mean over rows of -log(the softmax probability of the row's positive columns together)."""
    return (torch.logsumexp(logits, dim=1) - torch.logsumexp(logits.masked_fill(~positive, float("-inf")), dim=1)).mean()


def sentence_contrastive_loss(sentence_embeds: torch.Tensor, video_embeds: torch.Tensor, sentence_keys: torch.Tensor,
                              study_sentence_keys: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric contrastive loss between single sentences and studies over all processes, with every study
    whose impression holds sentence i a positive of it (not only the study it was drawn from).

    Reports repeat sentences ("No pericardial effusion."): plain InfoNCE would push a sentence away from the
    other studies in the batch that say it too. Scored on its own, a sentence has to carry its meaning
    itself, negation included, as a zero-shot prompt does. Row i of `sentence_embeds` was drawn from study i;
    `sentence_keys` (n,) and `study_sentence_keys` (n, S, -1 padding) are `data.collate.sentence_keys`."""
    sentences, videos = gather_with_grad(sentence_embeds), gather_with_grad(video_embeds)
    keys, study_keys = gather_keys(sentence_keys), gather_keys(study_sentence_keys)
    positive = (study_keys[None, :, :] == keys[:, None, None]).any(dim=-1)  # (sentences, studies)
    positive |= torch.eye(len(keys), dtype=torch.bool, device=positive.device)
    logits = sentences @ videos.T * logit_scale
    return multi_positive_nce(logits, positive) + multi_positive_nce(logits.T, positive.T)


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
