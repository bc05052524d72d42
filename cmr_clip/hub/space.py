"""The study web page (`cmr-clip app`) as a Hugging Face Space: what `cmr-clip push --space` stages and uploads.

    stage_space("cmr-clip-demo", "space-dry-run", index_dir="my-index", report_dir="cmr-clip-demo/report")

A Space is a repo the Hub runs: `app.py` (written by `space_app_source`: the same `build_app` as `cmr-clip app`,
on 0.0.0.0, port 7860 or the Space's GRADIO_SERVER_PORT), `requirements.txt` (the package with its `app` extra), a README whose YAML
header tells the Hub it is a Gradio Space, and the models beside them: `model/` and `report/` staged as `push`
stages a model (weights, configs, processor, prompt set, card), `index/` a copy of the study index whose study
keys are replaced by `case N` (export folder names are often accession numbers; the impressions stay). The
whole folder passes the PHI guard (`scan_folder`) before anything is uploaded.
"""

from __future__ import annotations

import tempfile
from importlib import metadata
from pathlib import Path

from ..index import CMRStudyIndex
from ..privacy import scan_folder, write_text
from .upload import stage, upload_staged

SPACE_MODEL, SPACE_INDEX, SPACE_REPORT = "model", "index", "report"
SPACE_TITLE = "CMR-CLIP study viewer"


def package_requirement() -> str:
    """The pip line of this cmr-clip release with the app's extra."""
    return f"cmr-clip[app]=={metadata.version('cmr-clip')}"


def space_app_source(index: bool, report: bool) -> str:
    """The Space's `app.py`: load the staged folders beside it and serve the page where Spaces look for it."""
    index_arg = f'HERE / "{SPACE_INDEX}"' if index else "None"
    report_arg = f'HERE / "{SPACE_REPORT}"' if report else "None"
    return (
        '"""Hugging Face Space: the cmr-clip study page (written by `cmr-clip push --space`)."""\n\n'
        "import os\nfrom pathlib import Path\n\n"
        "from cmr_clip.app import build_app, load_models, serve\n\n"
        "HERE = Path(__file__).parent\n"
        f'models = load_models(HERE / "{SPACE_MODEL}", index={index_arg}, report_model={report_arg})\n'
        'serve(build_app(models), host="0.0.0.0", port=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))\n'
    )


def space_card(license: str = "apache-2.0") -> str:
    """The Space's README: the Hub's YAML header (Gradio SDK, app.py) and what the page is for."""
    header = ["---", f"title: {SPACE_TITLE}", "sdk: gradio", "app_file: app.py", f"license: {license}", "pinned: false",
              "---"]
    try:
        header.insert(3, f"sdk_version: {metadata.version('gradio')}")
    except metadata.PackageNotFoundError:
        pass  # the Hub then picks its current Gradio
    body = (f"# {SPACE_TITLE}\n\nUpload a zipped cardiac MRI study (DICOM). The page shows how each series was "
            "classified and why, the frames the model used, zero-shot findings (and those the study cannot "
            "answer), the nearest cases of the index with their impressions, and a CMR-TARGET draft impression "
            "for a reader to edit. Research software, not a medical device: do not upload identifiable patient "
            "data to a public Space.\n")
    return "\n".join(header) + "\n\n" + body


def stage_space(model_dir: str | Path, out_dir: str | Path, index_dir: str | Path | None = None,
                report_dir: str | Path | None = None, requirement: str | None = None, license: str | None = None,
                **card_options) -> list[str]:
    """Write into `out_dir` exactly what `push_space` uploads (PHI guard included); returns the file names.
    `requirement`: the pip line for cmr-clip (default `package_requirement()`; a `git+https://...` URL where the
    release is not on PyPI); `license` and `card_options` go to the staged models' cards."""
    out_dir = Path(out_dir)
    stage(model_dir, out_dir / SPACE_MODEL, remote_code=False, license=license, **card_options)
    if report_dir is not None:
        stage(report_dir, out_dir / SPACE_REPORT, remote_code=False, license=license, **card_options)
    if index_dir is not None:
        index = CMRStudyIndex.load(index_dir, model=model_dir)
        index.study_ids = [f"case {i + 1}" for i in range(len(index))]
        index.save(out_dir / SPACE_INDEX)
    write_text(out_dir / "app.py", space_app_source(index_dir is not None, report_dir is not None), "app.py")
    write_text(out_dir / "requirements.txt", (requirement or package_requirement()) + "\n", "requirements.txt")
    write_text(out_dir / "README.md", space_card(license or "apache-2.0"), "README.md (Space card)")
    scan_folder(out_dir)
    return sorted(p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*") if p.is_file())


def push_space(model_dir: str | Path, repo_id: str, private: bool = False, token: str | None = None,
               endpoint: str | None = None, **options):
    """`stage_space`, then one commit to the Space `repo_id` (created as a Gradio Space if missing)."""
    with tempfile.TemporaryDirectory(prefix="cmr-clip-space-") as staging:
        files = stage_space(model_dir, staging, repo_id=repo_id, **options)
        return upload_staged(staging, files, repo_id, "space", private, "Upload the cmr-clip study page",
                             token=token, endpoint=endpoint, space_sdk="gradio")
