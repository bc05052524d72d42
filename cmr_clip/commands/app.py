"""`cmr-clip app --model DIR [--index DIR] [--report-model DIR]`: the study web page (Gradio), served locally.

    cmr-clip app --model cmr-clip-demo --index my-index --report-model cmr-clip-demo/report --studies-dir studies

Upload a zipped study, or pick one of the study folders or zips under `--studies-dir`; the page shows the series
table, the frames the model used, the findings, the nearest indexed cases and the CMR-TARGET draft (see
`cmr_clip.app`). Nothing is fetched from the internet. Needs the `app` extra (pip install 'cmr-clip[app]').
"""

from __future__ import annotations

import argparse

from ..app import build_app, load_models, serve
from ..index import StudyIndexError
from ..pipelines import PromptSetError
from .base import DONE

ERRORS = (StudyIndexError, PromptSetError, ImportError)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="a CMR-CLIP directory saved with its processor")
    parser.add_argument("--index", help="a study index (cmr-clip index build) built with --model: shows the nearest cases")
    parser.add_argument("--report-model", help="a CMR-TARGET directory: shows its draft impression")
    parser.add_argument("--studies-dir", help="a folder of study folders or zips the page offers to pick from")
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=7860, help="port to serve on")


def run(args: argparse.Namespace) -> int:
    models = load_models(args.model, index=args.index, report_model=args.report_model)
    page = build_app(models, studies_dir=args.studies_dir)
    print(f"serving the cmr-clip app on http://{args.host}:{args.port} (Ctrl+C stops it)")
    serve(page, host=args.host, port=args.port)
    return DONE
