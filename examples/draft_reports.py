"""Draft impressions for DICOM studies two ways: CMR-TARGET's generated draft and the retrieval baseline
(the impression of the most similar indexed study), side by side.

    cmr-clip demo --output-dir cmr-clip-demo
    python examples/draft_reports.py cmr-clip-demo/report cmr-clip-demo cmr-clip-demo/cohort/studies/SYN00003

The first argument is a CMR-TARGET directory, the second the CMR-CLIP it was built on (whose corpus's
training split, or `--corpus`, is indexed for the baseline); then study folders or zips. Both drafts are
starting points for a reader to edit, not reports.
"""

import argparse
import json
from pathlib import Path

from datasets import load_from_disk
from transformers import pipeline

from cmr_clip import CMRStudyIndex  # importing cmr_clip registers cmr-report-generation


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("target", help="CMR-TARGET directory")
    parser.add_argument("clip", help="CMR-CLIP directory for the retrieval baseline")
    parser.add_argument("studies", nargs="+")
    parser.add_argument("--corpus", help="prepared corpus whose training split is indexed (default: CLIP/corpus)")
    parser.add_argument("--num-beams", type=int, default=1)
    args = parser.parse_args(argv)

    draft = pipeline("cmr-report-generation", model=args.target)
    generated = draft(args.studies, num_beams=args.num_beams, max_sentences=8)

    index = CMRStudyIndex.from_model(args.clip)
    index.add_dataset(load_from_disk(args.corpus or str(Path(args.clip) / "corpus"))["train"], progress=False)
    results = []
    for study, answer in zip(args.studies, generated):
        row = {"study": Path(study).name}
        if "error" in answer:
            row["error"] = answer["error"]
        else:
            row["cmr_target"] = answer["sentences"]
            row["retrieval"] = index.draft_report(study, k=1)[0]["impression"]
        results.append(row)
        print(f"## {row['study']}")
        if "error" in row:
            print(f"skipped: {row['error']}\n")
            continue
        print("CMR-TARGET draft:")
        for sentence in row["cmr_target"]:
            print(f"  - {sentence}")
        print(f"Nearest past impression:\n  {row['retrieval']}\n")
    print(json.dumps({"drafts": len(results)}))
    return results


if __name__ == "__main__":
    main()
