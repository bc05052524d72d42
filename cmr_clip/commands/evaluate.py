"""`cmr-clip evaluate --model DIR --data-dir DIR`: zero-shot, few-shot, retrieval, slices and robustness, written
as metrics.json, summary.md and PNG plots (see `cmr_clip.evaluation.report`). With `--task report`, a
CMR-TARGET's drafts against the retrieval baseline (see `cmr_clip.evaluation.report_generation`).

    cmr-clip evaluate --model cmr-clip-demo --data-dir cmr-clip-demo/corpus --reports cmr-clip-demo/cohort/reports.jsonl
    cmr-clip evaluate --task report --model cmr-clip-demo/report --data-dir cmr-clip-demo/corpus --clip-model cmr-clip-demo
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..evaluation.report import evaluate_model
from ..evaluation.report_generation import evaluate_report_generation, format_comparison
from ..evaluation.errors import EvaluationError
from ..pipelines import PromptSetError
from ..precision import resolve_precision
from .base import DONE, NOTHING_DONE, add_flag, add_precision_flags, precision_kwargs, print_precision

ERRORS = (EvaluationError, PromptSetError)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", choices=["clip", "report"], default="clip",
                        help="clip: evaluate a CMR-CLIP; report: a CMR-TARGET against the retrieval baseline")
    parser.add_argument("--model", required=True, help="a CMR-CLIP (or, with --task report, CMR-TARGET) directory")
    add_flag(parser, "--data-dir", required=True, help="a prepared corpus with train, validation and test splits")
    add_flag(parser, "--output-dir", help="output folder (default: MODEL/evaluation)")
    parser.add_argument("--reports", help="reports JSONL with measurements (e.g. lvef) for the zero-shot estimate")
    parser.add_argument("--episodes", type=int, default=20, help="few-shot episodes per k")
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32], help="few-shot k values")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the 95%% intervals")
    parser.add_argument("--save-thresholds", action="store_true",
                        help="save the validation calibration and thresholds with the model (MODEL/zero_shot_prompts.json)")
    parser.add_argument("--calibration", choices=["platt", "isotonic"], default="platt",
                        help="how each finding's probabilities are calibrated on the validation split (saved with "
                             "--save-thresholds; the summary shows the test split's ECE before and after)")
    parser.add_argument("--mine-prompts", action="store_true",
                        help="zero-shot with finding prompts mined from the corpus's training impressions (the most "
                             "frequent one-finding sentences, numbers removed) instead of the built-in ones")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots (they need matplotlib)")
    parser.add_argument("--seed", type=int, default=0)
    add_precision_flags(parser)
    report = parser.add_argument_group("--task report")
    report.add_argument("--clip-model", help="the CMR-CLIP for the retrieval baseline (default: the one CMR-TARGET "
                                             "was trained from)")
    report.add_argument("--split", default="test")
    report.add_argument("--num-beams", type=int, default=1)
    report.add_argument("--max-new-tokens", type=int, default=160)
    report.add_argument("--max-sentences", type=int, default=None)


def run(args: argparse.Namespace) -> int:
    output_dir = Path(args.output_dir or Path(args.model) / "evaluation")
    print_precision("evaluate", resolve_precision(**precision_kwargs(args)))  # evaluation runs on the CPU
    if args.task == "report":
        results = evaluate_report_generation(args.model, args.data_dir, output_dir, clip_model=args.clip_model,
                                             split=args.split, num_beams=args.num_beams,
                                             max_new_tokens=args.max_new_tokens, max_sentences=args.max_sentences,
                                             resamples=args.bootstrap, **precision_kwargs(args))
        print(format_comparison(results))
        print(f"report_metrics.json in {output_dir}/")
        return DONE
    metrics = evaluate_model(args.model, args.data_dir, output_dir, reports=args.reports, ks=tuple(args.shots),
                             episodes=args.episodes, resamples=args.bootstrap, plots=not args.no_plots, seed=args.seed,
                             save_thresholds=args.save_thresholds, calibration=args.calibration,
                             mine_prompts=args.mine_prompts, **precision_kwargs(args))
    print((output_dir / "summary.md").read_text())
    print(f"metrics.json, summary.md{'' if args.no_plots else ' and plots'} in {output_dir}/")
    return DONE if metrics else NOTHING_DONE
