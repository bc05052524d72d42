"""`cmr-clip search QUERY --index DIR`: the indexed studies closest to a text or to a study.

    cmr-clip search "severe LV dilation with transmural LGE" --index my-index
    cmr-clip search path/to/study --index my-index --by-study --impressions   # retrieval-based draft report
"""

from __future__ import annotations

import argparse

from ..index import CMRStudyIndex, StudyIndexError
from .base import DONE, add_json_flag, add_precision_flags, precision_kwargs, print_precision, write_json

ERRORS = (StudyIndexError,)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("query", help="a text, or with --by-study a study folder or zip")
    parser.add_argument("--index", required=True, help="an index directory (cmr-clip index build)")
    parser.add_argument("--model", help="the model directory (default: the one recorded in the index)")
    parser.add_argument("--by-study", action="store_true", help="the query is a study, not a text")
    parser.add_argument("-k", type=int, default=5, help="how many studies to return")
    parser.add_argument("--impressions", action="store_true", help="show the impressions of the studies found")
    add_precision_flags(parser)
    add_json_flag(parser, "the hits")


def run(args: argparse.Namespace) -> int:
    precision = precision_kwargs(args)
    index = CMRStudyIndex.load(args.index, model=args.model, model_dtype=precision["dtype"],
                               quantize=precision["quantize"], compile=precision["compile"])
    print_precision("search", index.precision)
    if args.by_study:
        hits = index.draft_report(args.query, k=args.k) if args.impressions else index.search_by_study(args.query, k=args.k)
    else:
        hits = index.search(args.query, k=args.k)
        if args.impressions:
            position = {sid: i for i, sid in enumerate(index.study_ids)}
            hits = [{**hit, "impression": index.impressions[position[hit["study_id"]]]} for hit in hits]
    print("| rank | study | score |" + (" impression |" if args.impressions else ""))
    print("| ---- | ----- | ----- |" + (" ---------- |" if args.impressions else ""))
    for hit in hits:
        extra = f" {hit.get('impression') or ''} |" if args.impressions else ""
        print(f"| {hit['rank']} | {hit['study_id']} | {hit['score']:.3f} |{extra}")
    write_json(args.json, hits)
    return DONE
