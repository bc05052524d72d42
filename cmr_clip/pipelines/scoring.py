"""Zero-shot scores from CMR-CLIP embeddings: the arithmetic shared by the pipeline and the evaluation.

All functions take L2-normalised study embeddings (N, D) and prompt embeddings, and the model's logit
scale (1/temperature):
- candidate labels: softmax over labels of scale * cosine (each label an ensemble of prompts);
- findings: each finding on its own, softmax over its positive and negative sides, i.e.
  sigmoid(scale * (sim(study, positive) - sim(study, negative))), a probability per finding (multi-label),
  then mapped through the prompt set's calibration for that finding where it has one (`calibration.py`).
  A side's similarity is the cosine to its ensemble's mean direction, or, for a finding whose prompts state
  distinct patterns (`match: any`, e.g. the LGE patterns), the highest cosine to one of its prompts: the mean
  direction of a subendocardial, a mid-wall and a diffuse pattern is close to none of them;
- estimates: the expected value over a grid of stated values ("LVEF 20%" ... "LVEF 70%"), each value
  weighted by the softmax of scale * cosine to its prompts.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..embeddings import encode_texts
from .calibration import apply as apply_calibration
from .prompts import PromptSet, PromptSetError, estimate_prompts


def ensemble(embeds: torch.Tensor) -> torch.Tensor:
    """One direction for a prompt ensemble: the renormalised mean of its normalised embeddings."""
    return torch.nn.functional.normalize(embeds.mean(dim=0), dim=-1)


def side_similarity(videos: torch.Tensor, prompts: torch.Tensor, match: str) -> torch.Tensor:
    """(N,) similarity of each study to one side of a finding, from that side's normalised prompt embeddings (P, D):
    the cosine to their ensemble's direction ("ensemble"), or the highest cosine to one of them ("any")."""
    if match == "any":
        return (videos @ prompts.T).max(dim=-1).values
    return videos @ ensemble(prompts)


def label_probabilities(videos: torch.Tensor, labels: torch.Tensor, scale: float) -> torch.Tensor:
    """(N, L) softmax over candidate labels."""
    return (scale * videos @ labels.T).softmax(dim=-1)


def finding_probabilities(positive: torch.Tensor, negative: torch.Tensor, scale: float) -> torch.Tensor:
    """(N, F) probability that each finding is present, each judged on its own, from the studies' (N, F)
    similarities to each finding's positive and negative sides (`side_similarity`)."""
    return torch.sigmoid(scale * (positive - negative))


def value_estimate(videos: torch.Tensor, grid: torch.Tensor, values: torch.Tensor, scale: float) -> torch.Tensor:
    """(N,) similarity-weighted estimate over a value grid: sum_k softmax_k(scale * cos(study, grid_k)) * value_k."""
    weights = (scale * videos @ grid.T).softmax(dim=-1)
    return weights @ values.to(weights.dtype)


def calibrated_estimate(estimate: torch.Tensor, calibration: dict | None) -> torch.Tensor:
    """The similarity-weighted value through the estimate's linear calibration, when it has one."""
    if calibration is None:
        return estimate
    return calibration["slope"] * estimate + calibration["intercept"]


@dataclass(frozen=True)
class ZeroShotQuery:
    """What to ask of each study: candidate labels (with their prompts), findings, and estimates."""

    labels: tuple[str, ...] = ()
    label_prompts: tuple[tuple[str, ...], ...] = ()
    findings: tuple[str, ...] = ()
    estimates: tuple[str, ...] = ()

    @classmethod
    def build(cls, prompt_set: PromptSet, candidate_labels=None, hypothesis_template: str | None = None,
              findings=None, estimate=None) -> ZeroShotQuery:
        """Candidate labels that name a disease of the prompt set use its ensemble unless a template is given;
        other labels are put into `hypothesis_template` (default "{}."). `findings=True` asks every finding;
        with nothing asked at all, every finding is asked."""
        labels = [candidate_labels] if isinstance(candidate_labels, str) else list(candidate_labels or [])
        if hypothesis_template is not None and "{}" not in hypothesis_template:
            raise PromptSetError(f"hypothesis_template {hypothesis_template!r} needs a '{{}}' where the label goes.")
        label_prompts = tuple(_label_prompts(prompt_set, label, hypothesis_template) for label in labels)
        if findings is None and not labels and not estimate:
            findings = True
        finding_names = prompt_set.finding_names(None if findings is True else _as_list(findings)) if findings else []
        estimates = prompt_set.estimate_names(_as_list(estimate)) if estimate else []
        return cls(tuple(labels), label_prompts, tuple(finding_names), tuple(estimates))


def _as_list(names) -> list[str]:
    return [names] if isinstance(names, str) else list(names)


def _label_prompts(prompt_set: PromptSet, label: str, template: str | None) -> tuple[str, ...]:
    if template is None and label in prompt_set.diseases:
        return tuple(prompt_set.diseases[label])
    return ((template or "{}.").format(label),)


class PromptBank:
    """Prompt embeddings for queries against one model, each text encoded once and reused."""

    def __init__(self, model, tokenizer):
        self.model, self.tokenizer = model, tokenizer
        self._cache: dict[str, torch.Tensor] = {}

    def embed(self, texts: list[str]) -> torch.Tensor:
        missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if missing:
            self._cache.update(zip(missing, encode_texts(self.model, self.tokenizer, missing)))
        return torch.stack([self._cache[t] for t in texts])

    def ensembles(self, groups: list[list[str]]) -> torch.Tensor:
        return torch.stack([ensemble(self.embed(list(group))) for group in groups])

    def estimate_grid(self, prompt_set: PromptSet, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        spec = prompt_set.estimates[name]
        grid = self.ensembles(estimate_prompts(spec))
        return grid, torch.tensor(spec["values"], dtype=torch.float32)

    def score(self, videos: torch.Tensor, query: ZeroShotQuery, prompt_set: PromptSet, scale: float) -> dict[str, torch.Tensor]:
        """`label_scores` (N, L), `finding_scores` (N, F, calibrated where the prompt set has a calibration),
        `raw_finding_scores` (N, F, before calibration) and `estimates` (N, E) for normalised study embeddings."""
        n, device = videos.shape[0], videos.device
        out = {"label_scores": torch.zeros(n, 0), "finding_scores": torch.zeros(n, 0), "raw_finding_scores": torch.zeros(n, 0),
               "estimates": torch.zeros(n, 0)}
        if query.labels:
            out["label_scores"] = label_probabilities(videos, self.ensembles(list(query.label_prompts)).to(device), scale)
        if query.findings:
            def similarities(side: str) -> torch.Tensor:  # (N, F)
                return torch.stack([side_similarity(videos, self.embed(prompt_set.findings[f][side]).to(device),
                                                    prompt_set.match(f)) for f in query.findings], dim=1)

            out["raw_finding_scores"] = finding_probabilities(similarities("positive"), similarities("negative"), scale)
            out["finding_scores"] = calibrated(out["raw_finding_scores"], query.findings, prompt_set)
        if query.estimates:
            columns = []
            for name in query.estimates:
                grid, values = self.estimate_grid(prompt_set, name)
                estimate = value_estimate(videos, grid.to(device), values.to(device), scale)
                columns.append(calibrated_estimate(estimate, prompt_set.estimates[name].get("calibration")))
            out["estimates"] = torch.stack(columns, dim=1)
        return {k: v.cpu() for k, v in out.items()}


def calibrated(raw: torch.Tensor, findings: tuple[str, ...], prompt_set: PromptSet) -> torch.Tensor:
    """(N, F) raw finding probabilities through each finding's calibration (unchanged where it has none)."""
    columns = []
    for i, name in enumerate(findings):
        fitted = prompt_set.calibration_of(name)
        columns.append(raw[:, i] if fitted is None else apply_calibration(*fitted, raw[:, i]))
    return torch.stack(columns, dim=1) if columns else raw
