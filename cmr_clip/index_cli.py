"""`cmr-clip index build`: embed studies with a CMR-CLIP model and save a searchable index.

    cmr-clip index build --model cmr-clip-demo --data corpus --split train --out my-index
    cmr-clip index build --model cmr-clip-demo --studies DIR/SYN00001 DIR/SYN00002 --out my-index
    cmr-clip index build --model cmr-clip-demo --studies DIR/* --out my-index --append

Then search it with `cmr-clip search "severe LV dilation" --index my-index`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .privacy import write_json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    build = sub.add_parser("build", help="embed studies (folders/zips or a prepared corpus split) and save the index")
    build.add_argument("--model", required=True, help="a CMR-CLIP directory saved with its processor")
    build.add_argument("--out", required=True, help="index directory to write")
    source = build.add_mutually_exclusive_group(required=True)
    source.add_argument("--studies", nargs="+", help="study folders or zips (ids: folder names)")
    source.add_argument("--data", help="a prepared corpus (cmr-clip prepare); ids and impressions from it")
    build.add_argument("--split", default="train", help="corpus split to index (with --data)")
    build.add_argument("--append", action="store_true", help="add to an existing index in --out")
    build.add_argument("--backend", choices=["exact", "faiss"], default="exact")
    build.add_argument("--batch-size", type=int, default=8)


def run(args: argparse.Namespace) -> int:
    from .index import CMRStudyIndex

    if args.append and Path(args.out, "manifest.json").is_file():
        index = CMRStudyIndex.load(args.out, model=args.model, backend=args.backend)
    else:
        index = CMRStudyIndex.from_model(args.model, backend=args.backend)
    before = len(index)
    if args.data:
        from datasets import load_from_disk

        index.add_dataset(load_from_disk(args.data)[args.split], batch_size=args.batch_size)
        skipped = []
    else:
        skipped = index.add_studies(args.studies, batch_size=args.batch_size)
    index.save(args.out)
    print(f"indexed {len(index) - before} studies ({len(index)} in all) into {args.out}")
    for item in skipped:
        print(f"skipped {item['study_id']}: {item['error']}: {item['message']}")
    if skipped:
        write_json(Path(args.out, "skipped.json"), skipped)
    return 0
