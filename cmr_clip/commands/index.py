"""`cmr-clip index build`: embed studies with a CMR-CLIP model and save a searchable index.

    cmr-clip index build --model cmr-clip-demo --data-dir corpus --split train --output-dir my-index
    cmr-clip index build --model cmr-clip-demo --studies DIR/SYN00001 DIR/SYN00002 --output-dir my-index
    cmr-clip index build --model cmr-clip-demo --studies DIR/* --output-dir my-index --append
    cmr-clip index build --model cmr-clip-demo --data-dir corpus --output-dir my-index --dtype bfloat16 --quantize int8

Then search it with `cmr-clip search "severe LV dilation" --index my-index`. Studies that cannot be read are
listed (and written to OUTPUT_DIR/skipped.json) and the others indexed (exit 1).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..data.corpus import load_corpus
from ..index import CMRStudyIndex, StudyIndexError
from .base import UsageError, add_flag, add_precision_flags, outcome, precision_kwargs, print_failures, print_precision, write_json

ERRORS = (StudyIndexError,)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    build = sub.add_parser("build", help="embed studies (folders/zips or a prepared corpus split) and save the index")
    build.add_argument("--model", required=True, help="a CMR-CLIP directory saved with its processor")
    add_flag(build, "--output-dir", required=True, help="index directory to write")
    source = build.add_mutually_exclusive_group(required=True)
    source.add_argument("--studies", nargs="+", help="study folders or zips (ids: folder names)")
    add_flag(source, "--data-dir", help="a prepared corpus (cmr-clip prepare); ids and impressions from it")
    build.add_argument("--split", default="train", help="corpus split to index (with --data-dir)")
    build.add_argument("--append", action="store_true", help="add to an existing index in --output-dir")
    build.add_argument("--backend", choices=["exact", "faiss"], default="exact")
    build.add_argument("--faiss-index", default="Flat",
                       help="FAISS factory string with --backend faiss (Flat: exact; e.g. IVF1024,Flat or HNSW32,Flat)")
    build.add_argument("--faiss-params", help="FAISS search parameters, e.g. nprobe=16 or efSearch=128")
    build.add_argument("--storage-dtype", choices=["float32", "float16"], default="float32",
                       help="how the embeddings are stored (float16: half the disk and memory)")
    build.add_argument("--batch-size", type=int, default=8)
    add_precision_flags(build)


def run(args: argparse.Namespace) -> int:
    precision = precision_kwargs(args)
    if args.append and Path(args.output_dir, "manifest.json").is_file():
        index = CMRStudyIndex.load(args.output_dir, model=args.model, backend=args.backend,
                                   faiss_index=args.faiss_index, faiss_params=args.faiss_params,
                                   model_dtype=precision["dtype"], quantize=precision["quantize"],
                                   compile=precision["compile"])
    else:
        index = CMRStudyIndex.from_model(args.model, backend=args.backend, faiss_index=args.faiss_index,
                                         faiss_params=args.faiss_params, dtype=args.storage_dtype,
                                         model_dtype=precision["dtype"], quantize=precision["quantize"],
                                         compile=precision["compile"])
    print_precision("index", index.precision)
    before = len(index)
    if args.data_dir:
        corpus = load_corpus(args.data_dir)
        if args.split not in corpus:
            raise UsageError(f"--split {args.split}: the corpus has the splits {sorted(corpus)}.")
        index.add_dataset(corpus[args.split], batch_size=args.batch_size)
        skipped = []
    else:
        skipped = index.add_studies(args.studies, batch_size=args.batch_size)
    index.save(args.output_dir)
    print(f"indexed {len(index) - before} studies ({len(index)} in all) into {args.output_dir}")
    print_failures("index", [(item["study_id"], f"{item['error']}: {item['message']}") for item in skipped])
    if skipped:
        write_json(Path(args.output_dir, "skipped.json"), skipped, "skipped.json")
    return outcome(len(index) - before, len(skipped))
