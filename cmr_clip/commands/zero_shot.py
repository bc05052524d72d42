"""`cmr-clip zero-shot PATH... --model DIR`: zero-shot findings (and labels, estimates) for studies, as a table.

    cmr-clip zero-shot study_a study_b --model cmr-clip-demo --estimate lvef --json answers.json
    cmr-clip zero-shot study_a --model cmr-clip-demo --labels hcm amyloidosis icm nicm normal
    cmr-clip zero-shot study_a --model cmr-clip-demo --dtype float32 --quantize int8

Studies are shown by position and folder name (the user's own input), never by anything read from the files.
"""

from __future__ import annotations

import argparse

from transformers import pipeline

from ..pipelines import PromptSetError
from .base import add_json_flag, add_precision_flags, answers_outcome, precision_kwargs, print_precision, study_names, write_json

ERRORS = (PromptSetError,)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("studies", nargs="+", help="study folders or zips")
    parser.add_argument("--model", required=True, help="a CMR-CLIP directory saved with its processor")
    parser.add_argument("--labels", nargs="+", help="candidate labels (softmax over them); disease names of the prompt "
                                                    "set use its prompts")
    parser.add_argument("--template", help="hypothesis template for labels, with {} for the label")
    parser.add_argument("--findings", nargs="*", help="findings to judge (default: all of the prompt set's, unless "
                                                      "--labels or --estimate alone are given)")
    parser.add_argument("--estimate", nargs="+", help="quantities to estimate, e.g. lvef")
    parser.add_argument("--prompts", help="prompt set JSON (default: the model's zero_shot_prompts.json or built-in)")
    parser.add_argument("--score-unassessable", action="store_true",
                        help="also score findings the study lacks the views for (still marked not assessable)")
    parser.add_argument("--batch-size", type=int, default=1)
    add_precision_flags(parser)
    add_json_flag(parser, "the answers")


def run(args: argparse.Namespace) -> int:
    classify = pipeline("zero-shot-cmr", model=args.model, prompt_set=args.prompts, **precision_kwargs(args))
    print_precision("zero-shot", classify.precision)
    findings = True if args.findings == [] else args.findings
    if findings is None and not args.labels and not args.estimate:
        findings = True
    answers = classify([str(s) for s in args.studies], candidate_labels=args.labels, hypothesis_template=args.template,
                       findings=findings, estimate=args.estimate, score_unassessable=args.score_unassessable,
                       batch_size=args.batch_size)
    names = study_names(args.studies)
    print(format_table(names, answers))
    write_json(args.json, [{"study": n, **a} for n, a in zip(names, answers)])
    return answers_outcome("zero-shot", names, answers)


def format_table(names: list[str], answers: list[dict]) -> str:
    """One markdown table per study: labels, findings (with yes/no where thresholds exist, or why a finding cannot be
    assessed), estimates, warnings."""
    blocks = []
    for name, answer in zip(names, answers):
        if "error" in answer:
            blocks.append(f"## {name}\n\nskipped: {answer['error']}")
            continue
        lines = [f"## {name}", "", "| answer | score | call |", "| ------ | ----- | ---- |"]
        for item in answer.get("labels", []):
            lines.append(f"| {item['label']} | {item['score']:.3f} | |")
        for item in answer.get("findings", []):
            call = "" if "present" not in item else ("yes" if item["present"] else "no")
            score = f"{item['score']:.3f}" if "score" in item else ""
            if not item["assessable"]:
                call = f"not assessable: {item['reason']}"
            lines.append(f"| {item['finding']} | {score} | {call} |")
        for quantity, value in answer.get("estimates", {}).items():
            lines.append(f"| {quantity} (estimate) | {value:.1f} | |")
        lines += [f"warning: {w}" for w in answer.get("warnings", [])]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
