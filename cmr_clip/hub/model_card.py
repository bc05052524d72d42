"""The model card of a saved CMR-CLIP / CMR-TARGET directory: Hub metadata with the held-out results of its
metrics.json, intended use, training data in counts, limitations, how to load it and how to cite it; a converted
release's card also carries its provenance and conversion check. Nothing in it comes from patient-level records.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from datasets import load_from_disk
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..modeling.convert_original_checkpoint import CONVERSION_CHECK_FILE, PROVENANCE_FILE
from ..pipelines.prompts import MODEL_PROMPTS_FILE
from .publication import Publication, publication, read_json

# Only what is known of the paper; a publisher with the full reference passes `citation=`.
CITATION = """@article{nakashima2026cmrclip,
  title   = {CMR-CLIP},
  author  = {Nakashima and others},
  journal = {Nature Communications},
  year    = {2026}
}"""


def training_data_summary(data_dir: str | Path | None) -> dict | None:
    """Counts per split, vendors and field strengths of a prepared corpus (`cmr-clip prepare`); no identifiers.
    None without a corpus."""
    if data_dir is None or not (Path(data_dir) / "dataset_dict.json").is_file():
        return None
    corpus = load_from_disk(str(data_dir))
    summary = {"splits": {name: len(split) for name, split in corpus.items()}, "vendors": Counter(),
               "field_strengths": Counter()}
    for split in corpus.values():
        columns = split.column_names
        if "vendor" in columns:
            summary["vendors"].update(str(v or "unknown") for v in split["vendor"])
        if "field_strength" in columns:
            summary["field_strengths"].update(f"{v:g} T" if v == v and v is not None else "unknown"
                                              for v in split["field_strength"])
    report = read_json(Path(data_dir) / "prepare_report.json")
    summary["skipped"] = report.get("skipped")
    summary["patients_per_split"] = report.get("patients_per_split")
    summary["vendors"], summary["field_strengths"] = dict(summary["vendors"]), dict(summary["field_strengths"])
    return summary


def _value(figure):
    """A metrics.json figure: a number, or {"value", "low", "high"} from the bootstrap."""
    if isinstance(figure, dict):
        figure = figure.get("value")
    return float(figure) if isinstance(figure, (int, float)) and figure == figure else None


def card_results(metrics: dict) -> list[tuple[str, str, str, float]]:
    """(task, metric type, metric name, value) for the held-out test figures that `cmr-clip demo`, `train` and
    `evaluate` write to metrics.json: zero-shot AUC per finding, LVEF estimate MAE, retrieval Recall@K."""
    results = []
    zero_shot = metrics.get("test_zero_shot") or metrics.get("zero_shot") or {}
    for finding, figure in (zero_shot.get("auc") or {}).items():
        if _value(figure) is not None:
            results.append(("zero-shot findings", "roc_auc", f"AUC {finding}", _value(figure)))
    lvef = (zero_shot.get("lvef_estimate") or {}).get("mae")
    if _value(lvef) is not None:
        results.append(("zero-shot LVEF estimate", "mae", "LVEF MAE (percentage points)", _value(lvef)))
    retrieval = metrics.get("test_retrieval") or metrics.get("retrieval") or {}
    for direction in ("text_to_study", "study_to_text"):
        for k in (1, 5, 10):
            figure = _value(retrieval.get(f"{direction}_R@{k}"))
            if figure is not None:
                results.append(("retrieval", "recall", f"{direction.replace('_', '-')} Recall@{k}", figure))
    return results


def model_card(save_dir: str | Path, data_dir: str | Path | None = None, license: str | None = None,
               datasets: list[str] | None = None, repo_id: str | None = None, training_data: str | None = None,
               citation: str = CITATION):
    """A `huggingface_hub.ModelCard` for a saved CMR-CLIP / CMR-TARGET directory: Hub metadata (library,
    pipeline tag, tags, license, datasets, model-index results from metrics.json), intended use, training
    data summary (from `data_dir`, a prepared corpus; `save_dir/corpus` when the demo left one there),
    limitations, how to load and how to cite. A converted release (`cmr-clip convert-original`) also gets its
    provenance (source repo and revision, checksums, the conversion check) and, unless `license` is given, the
    licence its source states ("unknown" when it states none; apache-2.0 for the package's own models).
    Nothing in it comes from patient-level records."""
    save_dir = Path(save_dir)
    spec = publication(save_dir)
    metrics = read_json(save_dir / "metrics.json")
    origin = read_json(save_dir / PROVENANCE_FILE)
    stated = origin.get("license") or {}
    license = license or (stated.get("stated") or "unknown" if origin else "apache-2.0")
    if origin and training_data is None:
        training_data = ("The authors' own studies and reports, described in the paper; they are not part of this "
                         "repository and nothing more about them is known here.")
    if data_dir is None and (save_dir / "corpus").is_dir():
        data_dir = save_dir / "corpus"
    summary = training_data_summary(data_dir)
    name = repo_id or save_dir.resolve().name
    results = card_results(metrics)
    test_n = (metrics.get("splits") or {}).get("test") or (summary or {}).get("splits", {}).get("test")
    dataset_name = f"held-out test split ({test_n} studies)" if test_n else "held-out test split"
    eval_results = [EvalResult(task_type=spec.pipeline_tag, task_name=task, dataset_type=(datasets or ["held-out-test"])[0],
                               dataset_name=dataset_name, dataset_split="test", metric_type=metric_type,
                               metric_name=metric_name, metric_value=round(value, 4))
                    for task, metric_type, metric_name, value in results]
    data = ModelCardData(
        library_name="transformers", pipeline_tag=spec.pipeline_tag, tags=list(spec.tags), license=license,
        datasets=datasets or None, metrics=sorted({r[1] for r in results}) or None, model_name=name,
        eval_results=eval_results or None,
        **({"license_name": stated.get("name"), "license_link": stated.get("link")} if license == "other" else {}),
    )
    sections = [
        f"# {name}\n\n{spec.tags[0].upper()}: {spec.summary}. Built with "
        "the `cmr-clip` package as an ordinary transformers model.",
        *([_provenance(origin, read_json(save_dir / CONVERSION_CHECK_FILE))] if origin else []),
        _intended_use(),
        _how_to_load(name, spec),
        _training_data(summary, training_data, metrics),
        _evaluation(results, dataset_name, metrics),
        _limitations(),
        f"## Citation\n\nNakashima et al., *Nature Communications* 2026:\n\n```bibtex\n{citation}\n```",
    ]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n\n".join(sections) + "\n")


def _provenance(origin: dict, check: dict) -> str:
    """The converted release's source, checksums, stated licence and conversion check, from the converter's records."""
    source, stated = origin.get("source") or {}, origin.get("license") or {}
    where = (f"the Hub repository `{source.get('repo_id')}` at revision `{source.get('revision')}`"
             if source.get("repo_id") else f"a {source.get('kind', 'local copy')} of the release")
    licence = stated.get("stated") or "not stated by the source"
    if stated.get("name") or stated.get("link"):
        licence += f" ({', '.join(str(v) for v in (stated.get('name'), stated.get('link')) if v)})"
    lines = ["## Provenance", "",
             f"Converted with `cmr-clip convert-original` from the authors' released weights: {where}.", "",
             f"- source file: `{source.get('checkpoint_file') or 'checkpoint'}`, sha256 `{source.get('checkpoint_sha256')}`",
             f"- source config.json: sha256 `{source.get('config_sha256')}`",
             f"- licence, as the source states it: {licence}",
             f"- text tower tokenizer: {origin.get('text_model')}"]
    if check:
        lines.append(f"- conversion check: maximum absolute difference {check.get('max_abs_difference'):.2e} between "
                     "this model and an independent recomputation of the release's forward from the source weights "
                     f"(tolerance {check.get('tolerance')}; `{CONVERSION_CHECK_FILE}`)")
    lines.append("\nThe paper's citation is at the end of this card.")
    return "\n".join(lines)


def _intended_use() -> str:
    return ("## Intended use\n\nResearch on cardiac MRI representation learning: zero-shot findings, case retrieval, "
            "few-shot probes and report drafting as a *reader's assistant* whose output a cardiologist or radiologist "
            "checks. **It is not a diagnosis**, not a medical device, and not validated for clinical decisions.")


def _how_to_load(name: str, spec: Publication) -> str:
    task = spec.tasks[0]
    return (
        "## How to load\n\nWith the package (`pip install cmr-clip`):\n\n```python\nimport cmr_clip\n"
        f"from transformers import AutoModel, AutoProcessor, pipeline\n\nmodel = AutoModel.from_pretrained(\"{name}\")\n"
        f"processor = AutoProcessor.from_pretrained(\"{name}\")\n"
        f"classify = pipeline(\"{task}\", model=\"{name}\")\nclassify(\"path/to/dicom-study\")\n```\n\n"
        "Without it, the repository's own code (the package's modules, copied at upload) loads with "
        "`trust_remote_code=True`:\n\n```python\nfrom transformers import AutoModel, AutoProcessor, pipeline\n\n"
        f"model = AutoModel.from_pretrained(\"{name}\", trust_remote_code=True)\n"
        f"classify = pipeline(\"{task}\", model=\"{name}\", trust_remote_code=True)\n"
        "classify({\"pixel_values_videos\": frames})   # (T, 3, H, W), already processed\n```\n\n"
        "Reading DICOM studies (a folder or zip path as input) also needs `pip install pydicom scipy` (scipy finds "
        "the long-axis views from the study's anatomy).")


def _training_data(summary: dict | None, description: str | None, metrics: dict) -> str:
    lines = ["## Training data", ""]
    synthetic = "settings" in metrics and "studies" in (metrics.get("settings") or {})
    if description:
        lines.append(description)
    elif synthetic:
        lines.append("A synthetic cohort written by `cmr-clip demo`: beating-heart phantoms with known findings, imaged "
                     "as cine and LGE and written as vendor-style DICOM; no patient data.")
    if summary is None:
        lines.append("" if description or synthetic else "Not described by the publisher.")
        return "\n".join(lines).rstrip()
    lines += ["", "| split | studies |", "|---|---|"]
    lines += [f"| {split} | {count} |" for split, count in summary["splits"].items()]
    if summary.get("patients_per_split"):
        lines.append("\nSplits are by patient (no patient in two splits); patients per split: " +
                     ", ".join(f"{k} {v}" for k, v in summary["patients_per_split"].items()) + ".")
    if summary["vendors"]:
        lines.append("\nVendors (studies): " + ", ".join(f"{k} {v}" for k, v in sorted(summary["vendors"].items())) + ".")
    if summary["field_strengths"]:
        lines.append("Field strengths (studies): " +
                     ", ".join(f"{k} {v}" for k, v in sorted(summary["field_strengths"].items())) + ".")
    if summary.get("skipped"):
        lines.append(f"Studies left out because they could not be read: {summary['skipped']}.")
    return "\n".join(lines)


def _evaluation(results: list, dataset_name: str, metrics: dict) -> str:
    if not results:
        return "## Evaluation\n\nNo held-out figures were published with this model (no metrics.json)."
    lines = ["## Evaluation", "", f"On the {dataset_name}, as recorded in the training run's `metrics.json`:", "",
             "| task | metric | value |", "|---|---|---|"]
    lines += [f"| {task} | {name} | {value:.3f} |" for task, _, name, value in results]
    zero_shot = metrics.get("test_zero_shot") or metrics.get("zero_shot") or {}
    if zero_shot.get("threshold_rule"):
        lines.append(f"\nYes/no thresholds for findings: {zero_shot['threshold_rule']} (shipped in "
                     f"`{MODEL_PROMPTS_FILE}`).")
    return "\n".join(lines)


def _limitations() -> str:
    return ("## Limitations\n\n- Figures come from the held-out split of the training data; other hospitals, vendors, "
            "field strengths, protocols and populations may give different and worse results.\n"
            "- A study embedding depends on which series the DICOM processor recognises; check `warnings` and missing "
            "views in the processor's output.\n"
            "- Zero-shot answers depend on the prompt wording; thresholds were chosen on validation studies of the "
            "same data.\n- A model trained on the synthetic cohort only has learned phantoms, not patients.\n"
            "- Outputs are not a diagnosis.")


