"""Metrics of generated reports against reference impressions: BLEU-1..4, ROUGE-L, METEOR, clinical accuracy.

Every metric takes `predictions` (generated impressions) and `references` (one reference impression
per prediction), both lists of strings of the same length. The text metrics share one tokenisation,
the one `rouge-score` uses: lower case, words and numbers, punctuation dropped.

- `bleu`: corpus-level BLEU-1..4 (Papineni et al. 2002; sacrebleu on these tokens): n-gram counts
  pooled over the corpus, uniform weights over orders 1..n, brevity penalty against the reference
  length, no smoothing, as report-generation papers report it. BLEU-n is 0 when no prediction shares
  an n-gram of order up to n with its reference (or no prediction is n tokens long).
- `rouge_l`: mean over pairs of the ROUGE-L F-measure (longest common subsequence; `rouge-score`).
- `meteor_exact_stem`: mean over pairs of METEOR (nltk's `meteor_score`, alpha 0.9, beta 3, gamma 0.5)
  with exact and Porter-stem matching only. Full METEOR also matches WordNet synonyms; WordNet data
  cannot be installed offline from PyPI, so that stage is switched off and the score is named for
  what it is.
- `clinical_accuracy`: per-finding precision, recall and F1 between the findings stated in the
  prediction and in the reference (`findings.findings_present`: negated or unmentioned findings are
  absent), micro and macro F1, and diagnosis agreement.

BLEU, ROUGE-L and METEOR need the `report` extra (`pip install "cmr-clip[report]"`: sacrebleu,
rouge-score, nltk); clinical accuracy needs nothing.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Sequence

from .findings import FINDINGS, extract_diagnosis, findings_present

_TOKEN = re.compile(r"[a-z0-9]+")


def tokenize(text: str) -> list[str]:
    """Lower-case words and numbers of `text`, punctuation dropped (rouge-score's tokenisation)."""
    return _TOKEN.findall(text.lower())


def _require(module: str, metric: str):
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(f"{metric} needs {module.split('.')[0]} ({error}); install it with "
                          "pip install \"cmr-clip[report]\"") from error


def _check_pairs(predictions: Sequence[str], references: Sequence[str]) -> None:
    if isinstance(predictions, str) or isinstance(references, str):
        raise TypeError("predictions and references must be lists of strings, not a single string")
    if len(predictions) != len(references):
        raise ValueError(f"predictions and references differ in length: {len(predictions)} predictions, "
                         f"{len(references)} references")
    if not predictions:
        raise ValueError("no predictions to score: predictions and references are empty")
    for name, texts in (("predictions", predictions), ("references", references)):
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"{name}[{i}] is a {type(text).__name__}, expected a string")


def bleu(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Corpus BLEU-1..4 as {"bleu1": ..., "bleu4": ...}, in [0, 1]; no smoothing (see the module docstring)."""
    _check_pairs(predictions, references)
    metrics = _require("sacrebleu.metrics", "BLEU")
    hypotheses = [" ".join(tokenize(p)) for p in predictions]
    refs = [[" ".join(tokenize(r)) for r in references]]
    return {f"bleu{n}": metrics.BLEU(tokenize="none", smooth_method="none", max_ngram_order=n)
            .corpus_score(hypotheses, refs).score / 100.0 for n in range(1, 5)}


def rouge_l_scores(predictions: Sequence[str], references: Sequence[str]) -> list[float]:
    """ROUGE-L F-measure of each prediction-reference pair."""
    _check_pairs(predictions, references)
    scorer = _require("rouge_score.rouge_scorer", "ROUGE-L").RougeScorer(["rougeL"])
    return [scorer.score(ref, pred)["rougeL"].fmeasure for pred, ref in zip(predictions, references)]


def rouge_l(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Mean ROUGE-L F-measure over prediction-reference pairs."""
    scores = rouge_l_scores(predictions, references)
    return float(sum(scores) / len(scores))


class _NoSynonyms:
    """Stands in for nltk's WordNet reader: no synonyms, so METEOR matches exact words and stems only."""

    @staticmethod
    def synsets(word):
        return []


def meteor_exact_stem(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Mean METEOR over pairs with exact and Porter-stem matching, without WordNet synonyms."""
    _check_pairs(predictions, references)
    meteor = _require("nltk.translate.meteor_score", "METEOR")
    scores = [meteor.meteor_score([tokenize(ref)], tokenize(pred), wordnet=_NoSynonyms())
              for pred, ref in zip(predictions, references)]
    return float(sum(scores) / len(scores))


def _precision_recall_f1(tp: int, fp: int, fn: int) -> tuple[float | None, float | None, float | None]:
    """None for all three where the finding is in no prediction and no reference; 0 for an empty side."""
    if tp + fp + fn == 0:
        return None, None, None
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return precision, recall, 2 * tp / (2 * tp + fp + fn)


def clinical_accuracy(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float | int | None]:
    """Finding-level agreement of predictions with references, from the rule-based extractor.

    Per finding: `finding_<name>_precision`, `_recall`, `_f1` (None where neither side ever states the
    finding) and `_support` (references stating it). Overall: `finding_precision_micro`,
    `finding_recall_micro`, `finding_f1_micro` (counts pooled over findings), `finding_f1_macro` (mean
    of the defined per-finding F1s) and `diagnosis_accuracy` (share of references stating a diagnosis
    whose prediction states the same one; None if no reference states one).
    """
    _check_pairs(predictions, references)
    predicted = [findings_present(p) for p in predictions]
    reference = [findings_present(r) for r in references]
    out: dict[str, float | int | None] = {}
    totals = [0, 0, 0]
    f1s = []
    for name in FINDINGS:
        tp = sum(p[name] and r[name] for p, r in zip(predicted, reference))
        fp = sum(p[name] and not r[name] for p, r in zip(predicted, reference))
        fn = sum(r[name] and not p[name] for p, r in zip(predicted, reference))
        totals = [totals[0] + tp, totals[1] + fp, totals[2] + fn]
        precision, recall, f1 = _precision_recall_f1(tp, fp, fn)
        out.update({f"finding_{name}_precision": precision, f"finding_{name}_recall": recall,
                    f"finding_{name}_f1": f1, f"finding_{name}_support": tp + fn})
        if f1 is not None:
            f1s.append(f1)
    precision, recall, f1 = _precision_recall_f1(*totals)
    out.update({"finding_precision_micro": precision, "finding_recall_micro": recall, "finding_f1_micro": f1,
                "finding_f1_macro": sum(f1s) / len(f1s) if f1s else None,
                "diagnosis_accuracy": _diagnosis_accuracy(predictions, references)})
    return out


def _diagnosis_accuracy(predictions: Sequence[str], references: Sequence[str]) -> float | None:
    pairs = [(extract_diagnosis(p), d) for p, r in zip(predictions, references) if (d := extract_diagnosis(r))]
    return sum(p == d for p, d in pairs) / len(pairs) if pairs else None


def report_generation_metrics(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float | int | None]:
    """All report metrics in one flat dict: bleu1..bleu4, rougeL, meteor_exact_stem, the keys of
    `clinical_accuracy`, and n_reports."""
    return {
        **bleu(predictions, references),
        "rougeL": rouge_l(predictions, references),
        "meteor_exact_stem": meteor_exact_stem(predictions, references),
        **clinical_accuracy(predictions, references),
        "n_reports": len(predictions),
    }


__all__ = ["bleu", "clinical_accuracy", "meteor_exact_stem", "report_generation_metrics", "rouge_l", "rouge_l_scores",
           "tokenize"]
