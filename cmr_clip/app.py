"""The `cmr-clip app` web page (Gradio): one cardiac MRI study, read, classified and answered.

    from cmr_clip.app import load_models, build_app, serve
    models = load_models("cmr-clip-demo", index="my-index", report_model="cmr-clip-demo/report")
    serve(build_app(models, studies_dir="studies"), port=7860)

A user uploads a zipped study or picks a study folder or zip under `studies_dir`. The page shows the series
table (each series' sequence and view with the classifier's reasons), a montage of the frames the model
used, the findings with their probabilities (and those that cannot be assessed, with why), the nearest
cases of an index with their impressions, and the CMR-TARGET draft, an editable text marked as a draft.
`analyse` computes all of it without Gradio; every text it returns is de-identified with the study's own
identity (`privacy.deidentify`) and the whole page passes `privacy.check_json` before it is shown, so no
patient identifier from the DICOM reaches the browser. Studies are named by a neutral label, never by a
path. The page loads nothing from the internet (no analytics, no web fonts): it works offline.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from transformers import Pipeline, pipeline

from .index import CMRStudyIndex
from .privacy import PHIError, StudyIdentity, check_json, deidentify, safe_study_name
from .processing import Series, Study, read_study
from .processing.display import series_status
from .processing.errors import CMRStudyError
from .processing.identity import read_identity

UPLOADED = "uploaded study"
NEIGHBOURS = 5
# What the zero-shot answer's keys are shown as; any other key the pipeline returns (a study's coverage, ...) is
# shown as a note under the study's line.
ANSWER_KEYS = ("labels", "findings", "estimates", "warnings", "error")
MONTAGE_COLUMNS = 4
SERIES_TABLE_HEIGHT = 4000  # pixels: every series of a full study, reasons wrapped, without scrolling the table
DRAFT_LABEL = "DRAFT impression (CMR-TARGET): a draft for a reader to edit, not a report"
SERIES_HEADERS = ["series", "description", "sequence", "view", "role", "slices x phases", "confidence", "used",
                  "reasons"]
FINDING_HEADERS = ["finding", "probability", "threshold", "call", "details"]
UNASSESSABLE_HEADERS = ["finding", "why it cannot be assessed"]
NEIGHBOUR_HEADERS = ["rank", "case", "similarity", "impression"]
# Most of a row's width to the free text (reasons, impressions), so that it wraps instead of scrolling sideways.
SERIES_WIDTHS = ["6%", "12%", "7%", "6%", "10%", "7%", "7%", "7%", "38%"]
NEIGHBOUR_WIDTHS = ["6%", "12%", "9%", "73%"]
# Fonts the browser has: the default theme's web fonts would be fetched from Google, which an offline machine cannot.
SYSTEM_FONTS = ["ui-sans-serif", "system-ui", "sans-serif"]
MONO_FONTS = ["ui-monospace", "monospace"]
# Gradio's telemetry and update check call home at import and launch unless this is set first.
OFFLINE_ENVIRONMENT = {"GRADIO_ANALYTICS_ENABLED": "False"}
# Uploaded studies are patient data: Gradio's copies are deleted (checked every 10 minutes) an hour after upload,
# and when the server stops.
UPLOAD_KEPT_S = (600, 3600)


@dataclass
class AppModels:
    """The loaded models the page answers with: a zero-shot pipeline, and optionally an index and a report model."""

    classify: Pipeline
    index: CMRStudyIndex | None = None
    draft: Pipeline | None = None


@dataclass
class StudyView:
    """Everything the page shows for one study, de-identified: table rows, the montage PNG, the draft, notes."""

    label: str
    summary: str = ""
    series: list[list] = field(default_factory=list)
    montage: str | None = None
    findings: list[list] = field(default_factory=list)
    unassessable: list[list] = field(default_factory=list)
    neighbours: list[list] = field(default_factory=list)
    draft: str = ""
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None


def load_models(model: str | Path, index: str | Path | None = None,
                report_model: str | Path | None = None) -> AppModels:
    """The pipelines of a CMR-CLIP `model` directory and, when given, of a CMR-TARGET `report_model` and the
    study `index` (checked against the model: `IndexModelMismatchError` if it was built with another one)."""
    classify = pipeline("zero-shot-cmr", model=str(model))
    loaded_index = CMRStudyIndex.load(index, model=classify.model, processor=classify.processor) if index else None
    draft = pipeline("cmr-report-generation", model=str(report_model)) if report_model else None
    return AppModels(classify, loaded_index, draft)


def server_studies(studies_dir: str | Path | None) -> list[tuple[str, Path]]:
    """(label, path) of each study folder or zip directly under `studies_dir`, labelled by `safe_study_name`."""
    if not studies_dir:
        return []
    folder = Path(studies_dir)
    if not folder.is_dir():
        raise NotADirectoryError("--studies-dir is not a folder (not shown: a path may name a patient); give the "
                                 "folder that holds study folders or zips.")
    paths = sorted(p for p in folder.iterdir() if p.is_dir() or p.suffix.lower() == ".zip")
    return [(safe_study_name(p.name, i, read_identity(p)), p) for i, p in enumerate(paths)]


def analyse(source: str | Path, models: AppModels, label: str = UPLOADED) -> StudyView:
    """Read the study at `source` (folder or zip) and compute the page for it. A study that cannot be read gives a
    view holding only its error, one the model cannot take its series table and the error (typed errors' messages
    name no file by its path)."""
    try:
        study = read_study(source)
    except CMRStudyError as error:
        return StudyView(label, error=f"{type(error).__name__}: {error}")
    answer = models.classify(study)
    view = StudyView(label, summary=_summary(study), series=[_series_row(s) for s in study.series],
                     warnings=answer.get("warnings", []), error=answer.get("error"),
                     notes=[f"{key}: {value}" for key, value in answer.items() if key not in ANSWER_KEYS])
    if view.error is None:
        view.montage = _montage(study, models)
        view.findings, view.unassessable = finding_rows(answer)
        view.neighbours = _neighbours(study, models.index) if models.index is not None else []
        view.draft = models.draft(study)["generated_impression"] if models.draft is not None else ""
    try:
        return deidentified(view, read_identity(source))
    except PHIError as error:
        return StudyView(label, error=str(error))


def _neighbours(study: Study, index: CMRStudyIndex) -> list[list]:
    pixels = index.processor.feature_extractor(study)["pixel_values_videos"]
    return [[hit["rank"], hit["study_id"], round(hit["score"], 3), hit.get("impression") or ""]
            for hit in index.draft_report(pixels, k=NEIGHBOURS)]


def _summary(study: Study) -> str:
    frames = sum(len(s.frames) for s in study.series)
    return f"{len(study.series)} series, {frames} frames, {len(study.skipped)} files set aside"


def _series_row(series: Series) -> list:
    """A row of the series table: what `display.series_line` prints, as columns, with the reasons."""
    number = "?" if series.series_number is None else series.series_number
    return [number, series.description or "<no description>", series.sequence, series.view, series.role,
            f"{series.n_slices} x {series.n_phases}", round(series.confidence, 2),
            series_status(series), "; ".join(series.reasons)]


def _montage(study: Study, models: AppModels) -> str:
    """The frames the zero-shot model's processor selects, as a PNG in a fresh temporary folder (named neutrally)."""
    path = Path(tempfile.mkdtemp(prefix="cmr-clip-app-")) / "montage.png"
    study.montage(path, layout=models.classify.feature_extractor.study_layout, columns=MONTAGE_COLUMNS)
    return str(path)


def finding_rows(answer: dict) -> tuple[list[list], list[list]]:
    """(findings with a probability, findings that cannot be assessed with why), from whatever keys the pipeline
    returns: labels, findings (`assessable: false` with `reason` goes to the second table) and estimates."""
    shown, unassessable = [], []
    for item in answer.get("labels", []):
        shown.append([f"label: {item['label']}", round(item["score"], 3), "", "", "softmax over the candidate labels"])
    for item in answer.get("findings", []):
        if item.get("assessable") is False:
            unassessable.append([item["finding"], item.get("reason") or "not assessable"])
            continue
        call = "" if "present" not in item else ("present" if item["present"] else "absent")
        threshold = "" if item.get("threshold") is None else round(item["threshold"], 3)
        details = "; ".join(f"{key}: {value}" for key, value in item.items()
                            if key not in ("finding", "score", "threshold", "present", "assessable", "reason"))
        shown.append([item["finding"], round(item["score"], 3), threshold, call, details])
    for quantity, value in answer.get("estimates", {}).items():
        shown.append([f"{quantity} (estimate)", round(value, 1), "", "", ""])
    return shown, unassessable


def deidentified(view: StudyView, identity: StudyIdentity) -> StudyView:
    """`view` with every text de-identified against the study's `identity`, then passed by the guard
    (`PHIError` naming the field if anything still looks like an identifier)."""
    clean = StudyView(
        view.label, summary=view.summary, montage=view.montage, error=view.error,
        series=_clean_rows(view.series, identity), findings=_clean_rows(view.findings, identity),
        unassessable=_clean_rows(view.unassessable, identity),
        # The index's case keys are the user's own (see `CMRStudyIndex.add_studies`): only the guard checks them.
        neighbours=[[rank, case, score, _clean(text, identity)] for rank, case, score, text in view.neighbours],
        draft=_clean(view.draft, identity), warnings=_clean_rows([view.warnings], identity)[0],
        notes=_clean_rows([view.notes], identity)[0],
    )
    shown = {key: value for key, value in vars(clean).items() if key != "montage"}
    check_json(shown, "the app's page", local=True)
    return clean


def _clean_rows(rows: list[list], identity: StudyIdentity) -> list[list]:
    return [[_clean(cell, identity) for cell in row] for row in rows]


def _clean(cell, identity: StudyIdentity):
    return deidentify(cell, identity) if isinstance(cell, str) else cell


def status_markdown(view: StudyView) -> str:
    """The lines at the top of the results: which study and what was read, warnings and notes, and the error."""
    lines = [f"**{view.label}**: {view.summary or 'could not be read'}."]
    lines += [f"- warning: {warning}" for warning in view.warnings] + [f"- {note}" for note in view.notes]
    if view.error:
        lines.append(f"\n**Not answered**: {view.error}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------
# The Gradio page


def _gradio():
    """Gradio, imported only when the page is built (the `app` extra), with its telemetry switched off first."""
    for key, value in OFFLINE_ENVIRONMENT.items():
        os.environ.setdefault(key, value)
    try:
        import gradio
    except ImportError as error:
        raise ImportError("the app needs gradio: pip install 'cmr-clip[app]'") from error
    return gradio


def build_app(models: AppModels, studies_dir: str | Path | None = None):
    """The Gradio Blocks page answering with `models`; with `studies_dir`, also a picker of the studies there."""
    gr = _gradio()
    studies = server_studies(studies_dir)
    with gr.Blocks(title="cmr-clip: cardiac MRI study", analytics_enabled=False, delete_cache=UPLOAD_KEPT_S) as page:
        gr.Markdown("# cmr-clip: one cardiac MRI study\nResearch software: every answer is for a reader to check.")
        with gr.Row():
            upload = gr.File(label="Upload a zipped study (.zip)", file_types=[".zip"], type="filepath",
                             elem_id="upload")
            if studies:
                with gr.Column():
                    picker = gr.Dropdown([(label, i) for i, (label, _) in enumerate(studies)],
                                         label="or a study on the server", elem_id="picker")
                    pick = gr.Button("Analyse this study", elem_id="analyse")
        outputs = _result_components(gr, models)
        upload.upload(lambda path: _page_values(analyse(path, models, UPLOADED)), upload, outputs)
        if studies:
            pick.click(lambda i: _page_values(_analyse_picked(studies, i, models)), picker, outputs)
    return page


def _result_components(gr, models: AppModels) -> list:
    """The result components, top to bottom, in the order `_page_values` fills them."""
    status = gr.Markdown(elem_id="status")
    with gr.Row():
        with gr.Column():
            findings = gr.Dataframe(headers=FINDING_HEADERS, label="Findings (probability that each is present)",
                                    interactive=False, elem_id="findings")
            unassessable = gr.Dataframe(headers=UNASSESSABLE_HEADERS, label="Findings that cannot be assessed",
                                        interactive=False, elem_id="unassessable")
            draft = gr.Textbox(label=DRAFT_LABEL, lines=4, interactive=True, elem_id="draft",
                               visible=models.draft is not None)
        montage = gr.Image(label="Frames the model used", type="filepath", interactive=False, elem_id="montage")
    series = gr.Dataframe(headers=SERIES_HEADERS, label="Series and how each was classified", interactive=False,
                          wrap=True, max_height=SERIES_TABLE_HEIGHT, column_widths=SERIES_WIDTHS, elem_id="series")
    neighbours = gr.Dataframe(headers=NEIGHBOUR_HEADERS, label="Nearest cases in the index", interactive=False,
                              wrap=True, column_widths=NEIGHBOUR_WIDTHS, elem_id="neighbours",
                              visible=models.index is not None)
    return [status, series, montage, findings, unassessable, neighbours, draft]


def _analyse_picked(studies: list[tuple[str, Path]], choice: int | None, models: AppModels) -> StudyView:
    if choice is None:
        return StudyView("no study", error="pick a study in the list first")
    label, path = studies[choice]
    return analyse(path, models, label)


def _page_values(view: StudyView) -> tuple:
    return (status_markdown(view), view.series, view.montage, view.findings, view.unassessable, view.neighbours,
            view.draft)


def serve(page, host: str = "127.0.0.1", port: int | None = None, block: bool = True):
    """Launch `page` on `host:port` with a theme of system fonts (nothing fetched from the internet); with
    `block=False` return once serving, for tests and notebooks (`page.close()` stops it)."""
    gr = _gradio()
    theme = gr.themes.Default(font=SYSTEM_FONTS, font_mono=MONO_FONTS)
    return page.launch(server_name=host, server_port=port, theme=theme, prevent_thread_lock=not block,
                       share=False, inbrowser=False, quiet=True)
