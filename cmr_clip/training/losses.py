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
    """Symmetric contrastive loss between single sentences and studies over all processes, in which every study
    whose impression holds a sentence is a match of it (not only the study it was drawn from).

    Reports repeat sentences ("No pericardial effusion."): plain InfoNCE would push a sentence away from the
    other studies in the batch that say it too. Scored on its own, a sentence has to carry its meaning
    itself, negation included, as a zero-shot prompt does. `sentence_embeds` (M, D) are sentences drawn from
    the studies of `video_embeds` (B, D); `sentence_keys` (M,) and `study_sentence_keys` (B, S, -1 padding)
    are `data.collate.sentence_keys`. Processes may hold different numbers of sentences."""
    sentences, keys = gather_rows(sentence_embeds, sentence_keys)
    videos, study_keys = gather_with_grad(video_embeds), gather_keys(study_sentence_keys)
    real = keys != PADDING_KEY
    positive = (study_keys[None, :, :] == keys[:, None, None]).any(dim=-1) & real[:, None]  # (sentences, studies)
    logits = sentences @ videos.T * logit_scale
    to_studies = multi_positive_nce(logits[real], positive[real])
    to_sentences = multi_positive_nce(logits.T.masked_fill(~real[None, :], float("-inf")), positive.T)
    return to_studies + to_sentences


SEPARATION_SCALE = 10.0  # cosine similarities x 10: a gentle push, next to the contrastive loss's learnt scale


def sentence_separation_loss(sentence_embeds: torch.Tensor, sentence_keys: torch.Tensor,
                             scale: float = SEPARATION_SCALE) -> torch.Tensor:
    """Text-only contrastive loss over all processes' drawn sentences (M, D, normalised): each sentence's
    matches are the sentences with its key (the same words; itself included), every other sentence is
    pushed away. Spreads the text embeddings over as many directions as the reports have distinct
    sentences, so that a contrastive model cannot leave a finding's sentences on top of one another."""
    sentences, keys = gather_rows(sentence_embeds, sentence_keys)
    real = keys != PADDING_KEY
    sentences, keys = sentences[real], keys[real]
    positive = keys[:, None] == keys[None, :]
    return multi_positive_nce(sentences @ sentences.T * scale, positive)


PADDING_KEY = -2  # a row that `gather_rows` added to even out the processes' counts (keys are >= 0)


def gather_rows(embeds: torch.Tensor, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every process's (n_p, D) rows with gradients and their (n_p,) keys, concatenated in rank order, each
    process's part padded to the largest n_p with zero rows whose key is PADDING_KEY."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return embeds, keys
    count = torch.tensor([len(keys)], device=keys.device)
    dist.all_reduce(count, op=dist.ReduceOp.MAX)
    extra = int(count) - len(keys)
    embeds = nn.functional.pad(embeds, (0, 0, 0, extra))
    keys = nn.functional.pad(keys, (0, extra), value=PADDING_KEY)
    return gather_with_grad(embeds), gather_keys(keys)


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
