"""Prompt adaptation: fine-tune CMR-CLIP's text tower (whole or with LoRA) on labelled studies so that the
label prompts classify them, the video tower frozen.

The classifier scores a study exactly as zero-shot use does (`cmr_clip.pipelines.scoring`): each label
is an ensemble of prompts from a prompt set (the renormalised mean of their normalised embeddings); a
finding's logit is `scale * (cos(study, positive) - cos(study, negative))`, a class's logit (one
single-label field such as `diagnosis`) is `scale * cos(study, class prompts)`, with the model's logit
scale. Training moves only the prompt embeddings, so the adapted (or merged) text tower drops into the
zero-shot pipeline unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from ...modeling import CMRCLIPModel
from ...modeling.modeling_cmr_clip import CMRCLIPStudyClassifierOutput, study_classification_loss
from ...pipelines.prompts import PromptSet
from ...pipelines.scoring import ZeroShotQuery


class PromptAdaptationError(ValueError):
    """Prompt adaptation cannot run as asked (a label without prompts, a regression target)."""


def label_prompt_groups(prompt_set: PromptSet, problem_type: str, label_names: list[str]) -> list[list[str]]:
    """The prompt ensembles behind each logit: positive then negative ensemble per finding (multi-label), or
    one ensemble per class (single-label; a class the prompt set's `diseases` lacks is written "{class}.")."""
    if problem_type == "multi_label_classification":
        missing = [n for n in label_names if n not in prompt_set.findings]
        if missing:
            raise PromptAdaptationError(
                f"findings {missing} have no prompts in the prompt set {prompt_set.name!r} (it has "
                f"{sorted(prompt_set.findings)}); add positive and negative prompts for them, or fine-tune the video tower.")
        return [group for n in label_names for group in (prompt_set.findings[n]["positive"], prompt_set.findings[n]["negative"])]
    if problem_type == "single_label_classification":
        return [list(prompts) for prompts in ZeroShotQuery.build(prompt_set, candidate_labels=label_names).label_prompts]
    raise PromptAdaptationError(f"prompt adaptation classifies; {problem_type} needs the video tower (--tower video).")


class PromptClassifier(nn.Module):
    """A CMR-CLIP model (`clip`, possibly a `PeftModel` with text-tower adapters) scoring studies against
    fixed label prompts; `forward(pixel_values_videos, labels)` gives `loss` and `logits` like
    `CMRCLIPForStudyClassification`. Only the text tower and its projection can learn."""

    def __init__(self, clip, tokenizer, prompt_groups: list[list[str]], problem_type: str,
                 label_weights: list[float] | None = None):
        super().__init__()
        self.clip, self.problem_type, self.label_weights = clip, problem_type, label_weights
        self.prompt_groups = [list(g) for g in prompt_groups]
        texts = [t for group in self.prompt_groups for t in group]
        base = clip.get_base_model() if hasattr(clip, "get_base_model") else clip
        tokens = tokenizer(texts, padding=True, truncation=True, max_length=base.config.max_text_length,
                           return_tensors="pt")
        self.register_buffer("prompt_ids", tokens["input_ids"], persistent=False)
        self.register_buffer("prompt_mask", tokens["attention_mask"], persistent=False)
        self.register_buffer("prompt_group", torch.tensor([i for i, g in enumerate(self.prompt_groups) for _ in g]),
                             persistent=False)
        for name, param in base.named_parameters():
            if not name.startswith(("text_model.", "text_projection.")):
                param.requires_grad_(False)

    @property
    def base_clip(self) -> CMRCLIPModel:
        return self.clip.get_base_model() if hasattr(self.clip, "get_base_model") else self.clip

    def prompt_embeddings(self) -> torch.Tensor:
        """(groups, D) normalised ensemble directions, differentiable through the text tower."""
        base = self.base_clip
        text = base.get_text_features(input_ids=self.prompt_ids, attention_mask=self.prompt_mask).pooler_output
        text = nn.functional.normalize(text, dim=-1)
        sums = torch.zeros(len(self.prompt_groups), text.shape[-1], dtype=text.dtype, device=text.device)
        return nn.functional.normalize(sums.index_add(0, self.prompt_group, text), dim=-1)

    def forward(self, pixel_values_videos: torch.Tensor, labels: torch.Tensor | None = None) -> CMRCLIPStudyClassifierOutput:
        base = self.base_clip
        with torch.no_grad():  # the video tower is frozen
            videos = base.get_video_features(pixel_values_videos=pixel_values_videos).pooler_output
        videos = nn.functional.normalize(videos, dim=-1)
        similarity = base.logit_scale_value().to(videos.device, videos.dtype) * videos @ self.prompt_embeddings().T
        if self.problem_type == "multi_label_classification":
            logits = similarity[:, 0::2] - similarity[:, 1::2]
        else:
            logits = similarity
        loss = study_classification_loss(self.problem_type, logits, labels, self.label_weights) if labels is not None else None
        return CMRCLIPStudyClassifierOutput(loss=loss, logits=logits, study_embeds=videos)
