"""`evaluate_report_generation`: CMR-TARGET's drafts against the retrieval baseline on one split of a
prepared corpus (what `cmr-clip evaluate --task report` runs).

Both systems draft an impression for every study of the split: CMR-TARGET generates one from the study's
video features; the baseline copies the impression of the nearest training study in CMR-CLIP's
embedding space (`CMRStudyIndex.draft_report`). Both are scored against the true impressions with the
same metrics (`report_metrics.report_generation_metrics`), plus how often a finding the reference rules
out is asserted by the draft.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data.collate import StudyCollator
from ..data.corpus import load_corpus
from ..data.dataset import StudyTextDataset
from ..embeddings import embed_split
from ..index import CMRStudyIndex
from ..modeling import CMRTargetForConditionalGeneration
from ..precision import set_precision
from ..privacy import write_json
from ..processing import CMRTargetProcessor
from .findings import FINDINGS, extract_findings, findings_present
from .intervals import with_interval
from .report_metrics import report_generation_metrics, rouge_l_scores


def load_split(data_dir: str | Path, split: str):
    corpus = load_corpus(str(data_dir))
    if split not in corpus:
        raise ValueError(f"{data_dir} has no {split!r} split (splits: {list(corpus)}).")
    return corpus


def study_batches(split, study_processor, batch_size: int):
    """`pixel_values_videos` of a prepared split, `batch_size` studies at a time (each slot's middle frame)."""
    loader = torch.utils.data.DataLoader(StudyTextDataset(split), batch_size=batch_size,
                                         collate_fn=StudyCollator(study_processor))
    for batch in loader:
        yield batch["pixel_values_videos"]


@torch.no_grad()
def generate_impressions(model, processor, split, batch_size: int = 8, progress: bool = True,
                         **generate_kwargs) -> list[list[str]]:
    """CMR-TARGET's draft, as a list of sentences, for every study of a prepared split."""
    model.eval()
    drafts: list[list[str]] = []
    batches = study_batches(split, processor.feature_extractor, batch_size)
    total = -(-len(split) // batch_size)
    for pixels in tqdm(batches, total=total, desc="drafting impressions", disable=not progress):
        ids = model.generate(pixels.to(model.device, model.dtype), **generate_kwargs)
        drafts.extend(processor.decode_sentences(ids))
    return drafts


def retrieval_impressions(clip_model: str | Path, train_split, split, batch_size: int = 32,
                          progress: bool = True, dtype: str | torch.dtype = "float32", quantize: str | None = None,
                          compile: bool = False) -> list[str]:
    """The retrieval baseline: for every study of `split`, the impression of its nearest training study, the
    CMR-CLIP run in the precision `dtype`, `quantize` and `compile` set (`cmr_clip.precision`)."""
    index = CMRStudyIndex.from_model(clip_model, model_dtype=dtype, quantize=quantize, compile=compile)
    index.add_dataset(train_split, batch_size=batch_size, progress=progress)
    queries = embed_split(index.model, index.processor, split, batch_size=batch_size, progress=progress)["video"]
    _, positions = index.top_k(queries, 1)
    return [index.impressions[p] for p in positions[:, 0].tolist()]


def negated_findings_asserted(predictions: list[str], references: list[str]) -> dict[str, float | int]:
    """Of the (study, finding) pairs whose reference explicitly rules the finding out, how many the
    prediction states as present (lower is better; 0 means a negated finding is never reported)."""
    negated = asserted = 0
    for prediction, reference in zip(predictions, references):
        present = findings_present(prediction)
        for name, mention in extract_findings(reference).items():
            if name in FINDINGS and not mention.present:
                negated += 1
                asserted += present[name]
    return {"negated_pairs": negated, "negated_asserted": asserted,
            "negated_asserted_rate": asserted / negated if negated else 0.0}


def finding_counts(predictions: list[str], references: list[str]) -> np.ndarray:
    """(n, 3): true positives, false positives and false negatives of each study, over all findings."""
    counts = []
    for prediction, reference in zip(predictions, references):
        p, r = findings_present(prediction), findings_present(reference)
        counts.append([sum(p[f] and r[f] for f in FINDINGS), sum(p[f] and not r[f] for f in FINDINGS),
                       sum(r[f] and not p[f] for f in FINDINGS)])
    return np.array(counts, dtype=float)


def _micro_f1(counts: np.ndarray) -> float:
    tp, fp, fn = counts.sum(0)
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")


def paired_differences(drafts: list[str], baseline: list[str], references: list[str], resamples: int = 1000,
                       seed: int = 0) -> dict:
    """CMR-TARGET minus baseline on finding-level micro F1 and mean ROUGE-L, with paired bootstrap 95%
    intervals over studies (both systems scored on the same resampled studies)."""
    ours, theirs = finding_counts(drafts, references), finding_counts(baseline, references)
    rouge_ours, rouge_theirs = np.array(rouge_l_scores(drafts, references)), np.array(rouge_l_scores(baseline, references))
    return {
        "finding_f1_micro": with_interval(lambda a, b: _micro_f1(a) - _micro_f1(b), ours, theirs,
                                          resamples=resamples, seed=seed),
        "rougeL": with_interval(lambda a, b: float(a.mean() - b.mean()), rouge_ours, rouge_theirs,
                                resamples=resamples, seed=seed),
    }


def score_drafts(predictions: list[str], references: list[str]) -> dict:
    return {**report_generation_metrics(predictions, references), **negated_findings_asserted(predictions, references)}


def evaluate_report_generation(target_dir: str | Path, data_dir: str | Path, out_dir: str | Path | None = None,
                               clip_model: str | Path | None = None, split: str = "test", batch_size: int = 8,
                               examples: int = 5, progress: bool = True, resamples: int = 1000,
                               dtype: str | torch.dtype = "float32", quantize: str | None = None, compile: bool = False,
                               **generate_kwargs) -> dict:
    """Scores CMR-TARGET (`target_dir`) and, when `clip_model` is given (default: the CMR-CLIP that
    CMR-TARGET was trained from, as recorded in its `metrics.json`), the retrieval baseline on `split`.
    With the baseline, `difference` holds CMR-TARGET minus baseline on finding-level micro F1 and ROUGE-L with
    paired bootstrap 95% intervals (`resamples`). Writes `report_metrics.json` (figures and a few example
    drafts, no identifiers) to `out_dir`. Both models run in the precision `dtype`, `quantize` and `compile` set
    (`cmr_clip.precision`; float32 by default, so that figures are comparable across machines)."""
    corpus = load_split(data_dir, split)
    test = corpus[split]
    references = list(test["impression"])
    model = CMRTargetForConditionalGeneration.from_pretrained(target_dir)
    set_precision(model, dtype, quantize, compile)
    processor = CMRTargetProcessor.from_pretrained(target_dir)
    generate_kwargs.setdefault("max_new_tokens", 160)
    drafts = [" ".join(s) for s in generate_impressions(model, processor, test, batch_size, progress, **generate_kwargs)]
    results = {"split": split, "n_studies": len(test), "generation": {k: v for k, v in generate_kwargs.items()
                                                                        if isinstance(v, (int, float, str, bool))},
               "cmr_target": score_drafts(drafts, references)}
    clip_model = clip_model or _recorded_clip_model(target_dir)
    baseline = None
    if clip_model is not None:
        baseline = retrieval_impressions(clip_model, corpus["train"], test, progress=progress, dtype=dtype,
                                         quantize=quantize, compile=compile)
        results["retrieval_baseline"] = score_drafts(baseline, references)
        results["difference"] = paired_differences(drafts, baseline, references, resamples=resamples)
    results["examples"] = [
        {"reference": references[i], "cmr_target": drafts[i], **({"retrieval": baseline[i]} if baseline else {})}
        for i in range(min(examples, len(test)))
    ]
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "report_metrics.json", results)
    return results


def _recorded_clip_model(target_dir: str | Path) -> str | None:
    path = Path(target_dir) / "metrics.json"
    if not path.is_file():
        return None
    recorded = json.loads(path.read_text()).get("config", {}).get("cmr_clip_model")
    return recorded if recorded and Path(recorded).is_dir() else None


def format_comparison(results: dict) -> str:
    """A small text table of the headline figures of each system."""
    keys = ["finding_f1_micro", "finding_f1_macro", "rougeL", "bleu1", "bleu4", "meteor_exact_stem",
            "diagnosis_accuracy", "negated_asserted_rate"]
    systems = [s for s in ("cmr_target", "retrieval_baseline") if s in results]
    lines = [f"{'metric':<24}" + "".join(f"{s:>20}" for s in systems)]
    for key in keys:
        values = [results[s].get(key) for s in systems]
        lines.append(f"{key:<24}" + "".join(f"{v:>20.3f}" if isinstance(v, float) else f"{str(v):>20}" for v in values))
    for key, figure in results.get("difference", {}).items():
        interval = (f"[{figure['low']:+.3f}, {figure['high']:+.3f}]" if figure["low"] is not None else "[n/a]")
        lines.append(f"CMR-TARGET - baseline, {key}: {figure['value']:+.3f}, paired bootstrap 95% interval {interval}")
    return "\n".join(lines)
