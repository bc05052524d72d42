"""`cmr-clip evaluate --model DIR --data DIR`: zero-shot, few-shot, retrieval, slices and robustness, written as
metrics.json, summary.md and PNG plots (see `cmr_clip.evaluation.report`). With `--task report`, a CMR-TARGET's
drafts against the retrieval baseline (see `cmr_clip.evaluation.report_generation`).

    cmr-clip evaluate --model cmr-clip-demo --data cmr-clip-demo/corpus --reports cmr-clip-demo/cohort/reports.jsonl
    cmr-clip evaluate --task report --model cmr-clip-demo/report --data cmr-clip-demo/corpus --clip-model cmr-clip-demo
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", choices=["clip", "report"], default="clip",
                        help="clip: evaluate a CMR-CLIP; report: a CMR-TARGET against the retrieval baseline")
    parser.add_argument("--model", required=True, help="a CMR-CLIP (or, with --task report, CMR-TARGET) directory")
    parser.add_argument("--data", required=True, help="a prepared corpus with train, validation and test splits")
    parser.add_argument("--out", help="output folder (default: MODEL/evaluation)")
    parser.add_argument("--reports", help="reports JSONL with measurements (e.g. lvef) for the zero-shot estimate")
    parser.add_argument("--episodes", type=int, default=20, help="few-shot episodes per k")
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32], help="few-shot k values")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the 95%% intervals")
    parser.add_argument("--save-thresholds", action="store_true",
                        help="save the validation thresholds with the model (MODEL/zero_shot_prompts.json)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots (they need matplotlib)")
    parser.add_argument("--seed", type=int, default=0)
    report = parser.add_argument_group("--task report")
    report.add_argument("--clip-model", help="the CMR-CLIP for the retrieval baseline (default: the one CMR-TARGET "
                                             "was trained from)")
    report.add_argument("--split", default="test")
    report.add_argument("--num-beams", type=int, default=1)
    report.add_argument("--max-new-tokens", type=int, default=160)
    report.add_argument("--max-sentences", type=int, default=None)


def run(args: argparse.Namespace) -> int:
    if args.task == "report":
        return run_report(args)
    from .report import evaluate_model

    out = Path(args.out or Path(args.model) / "evaluation")
    metrics = evaluate_model(args.model, args.data, out, reports=args.reports, ks=tuple(args.shots),
                             episodes=args.episodes, resamples=args.bootstrap, plots=not args.no_plots, seed=args.seed,
                             save_thresholds=args.save_thresholds)
    print((out / "summary.md").read_text())
    print(f"metrics.json, summary.md{'' if args.no_plots else ' and plots'} in {out}/")
    return 0 if metrics else 1


def run_report(args: argparse.Namespace) -> int:
    from .report_generation import evaluate_report_generation, format_comparison

    out = Path(args.out or Path(args.model) / "evaluation")
    results = evaluate_report_generation(args.model, args.data, out, clip_model=args.clip_model, split=args.split,
                                         num_beams=args.num_beams, max_new_tokens=args.max_new_tokens,
                                         max_sentences=args.max_sentences, resamples=args.bootstrap)
    print(format_comparison(results))
    print(f"report_metrics.json in {out}/")
    return 0
