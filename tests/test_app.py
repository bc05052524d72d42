"""`cmr-clip app`: the page's content for a synthetic study (series as the synthetic writer's truth says, findings
and draft equal to the pipelines' own answers, nearest cases equal to the index's), a patient's name in a series
description never shown, an unreadable upload answered with its typed error, studies on the server labelled
without identifiers, and the page driven in Debian's chromium through Playwright: upload a zip, wait for the
results, read the series table, the findings and the draft, with no request leaving localhost; a screenshot is
saved to pytest's tmp dir (and to $CMR_CLIP_SCREENSHOT_DIR when set)."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import pydicom
import pytest
from huggingface_hub import SpaceCard
from packaging.requirements import Requirement
from target_support import save_tiny_target
from test_zero_shot_support import save_random_model
from transformers import GenerationConfig, pipeline

from cmr_clip.app import (DRAFT_LABEL, UPLOADED, analyse, build_app, finding_rows, load_models, serve, server_studies,
                          status_markdown)
from cmr_clip.cli import main
from cmr_clip.index import CMRStudyIndex
from cmr_clip.synthetic import make_cohort

gradio = pytest.importorskip("gradio", reason="the app extra (gradio) is not installed: pip install 'cmr-clip[app]'")


def missing(reason: str):
    """Skip for a missing browser outside CI; in CI (`CI` set) the browser test must run, so fail."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set: .ci/run installs it)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("cohort")
    records = make_cohort(root, 2, seed=5, progress=False, num_workers=1)
    return root, records


@pytest.fixture(scope="module")
def study_zip(cohort, tmp_path_factory):
    root, records = cohort
    return Path(shutil.make_archive(str(tmp_path_factory.mktemp("upload") / "study"), "zip",
                                    root / "studies" / records[0]["study_id"]))


@pytest.fixture(scope="module")
def model_dirs(cohort, tmp_path_factory):
    """(CMR-CLIP, study index built with it over the cohort, CMR-TARGET drafting words of its vocabulary)."""
    root, records = cohort
    base = tmp_path_factory.mktemp("models")
    model = save_random_model(base / "clip")
    index = CMRStudyIndex.from_model(model)
    index.add_studies([root / "studies" / r["study_id"] for r in records], impressions=[r["impression"] for r in records],
                      progress=False)
    index.save(base / "index")
    report = save_tiny_target(base / "report", n_positions=256)
    # A random decoder ends at once; these settings make it write a few words of its vocabulary instead.
    tokenizer = pipeline("cmr-report-generation", model=str(report)).processor.tokenizer
    words = {i for token, i in tokenizer.get_vocab().items() if len(token.lstrip("Ġ")) >= 3 and token.lstrip("Ġ").isalpha()}
    keep = words | {tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|sep|>")}
    config = GenerationConfig.from_pretrained(report)
    config.update(min_new_tokens=12, no_repeat_ngram_size=1,
                  suppress_tokens=[i for i in range(len(tokenizer)) if i not in keep])
    config.save_pretrained(report)
    return model, base / "index", report


@pytest.fixture(scope="module")
def models(model_dirs):
    model, index, report = model_dirs
    return load_models(model, index=index, report_model=report)


def truth_views(cohort, study_id) -> dict[int, tuple[str, str]]:
    """Series number -> (sequence, view) as the synthetic writer recorded them (roles like 'lge_psir' are LGE)."""
    frames = json.loads((cohort[0] / "truth" / f"{study_id}.json").read_text())["frames"]
    return {f["series_number"]: (f["sequence"], f["view"]) for f in frames}


def test_the_page_shows_the_series_as_written_and_the_pipelines_answers(models, cohort, study_zip):
    view = analyse(study_zip, models)
    assert view.error is None and view.label == UPLOADED
    truth = truth_views(cohort, cohort[1][0]["study_id"])
    shown = {(row[0], row[2], row[3]) for row in view.series}
    assert shown == {(number, sequence, view_) for number, (sequence, view_) in truth.items()}
    assert all(row[8] for row in view.series), "every series shows the classifier's reasons"
    answer = pipeline("zero-shot-cmr", model=models.classify.model.name_or_path)(str(study_zip))
    assert [row[0] for row in view.findings] == [item["finding"] for item in answer["findings"]]
    assert [row[1] for row in view.findings] == [pytest.approx(item["score"], abs=1e-3) for item in answer["findings"]]
    draft = models.draft(str(study_zip))["generated_impression"]
    assert view.draft == draft and len(draft.split()) >= 2
    hits = models.index.draft_report(str(study_zip), k=5)
    assert [(row[1], row[3]) for row in view.neighbours] == [(h["study_id"], h["impression"]) for h in hits]
    assert Path(view.montage).read_bytes().startswith(b"\x89PNG")


def test_a_patient_name_in_a_series_description_is_not_shown(models, cohort, tmp_path):
    study = shutil.copytree(cohort[0] / "studies" / cohort[1][0]["study_id"], tmp_path / "study")
    family = None
    for path in sorted(p for p in study.rglob("*") if p.is_file()):
        ds = pydicom.dcmread(path)
        family = str(ds.PatientName).split("^")[0]
        if ds.SeriesNumber == 601:
            ds.SeriesDescription = f"cine SA {family}"
            ds.save_as(path)
    view = analyse(study, models, "study 1")
    assert len(family) > 2
    page = json.dumps({k: v for k, v in vars(view).items() if k != "montage"})
    assert family.lower() not in page.lower()
    assert any("[NAME]" in str(row[1]) for row in view.series if row[0] == 601)


def test_an_unreadable_upload_gets_its_typed_error(models, tmp_path):
    archive = tmp_path / "notes.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("readme.txt", "not a DICOM file")
    view = analyse(archive, models)
    assert view.error.startswith("NotAStudyError:") and "study folder, zip or file list" in view.error
    assert view.series == [] and view.findings == []


def test_a_study_without_cine_shows_its_series_and_why_it_is_not_answered(models, cohort, tmp_path):
    study = shutil.copytree(cohort[0] / "studies" / cohort[1][0]["study_id"], tmp_path / "study")
    for path in sorted(p for p in study.rglob("*") if p.is_file()):
        if pydicom.dcmread(path, stop_before_pixels=True).SeriesNumber not in (101, 701):  # localizer, T1 map
            path.unlink()
    view = analyse(study, models, "study 1")
    assert {row[0] for row in view.series} == {101, 701} and view.findings == [] and view.draft == ""
    assert view.error.startswith("NoUsableCineError:")
    assert "Not answered**: NoUsableCineError" in status_markdown(view)


def test_studies_on_the_server_are_labelled_without_identifiers(cohort, tmp_path):
    folder = tmp_path / "server"
    shutil.copytree(cohort[0] / "studies" / cohort[1][0]["study_id"], folder / "DOE^JANE_19700101")
    shutil.copytree(cohort[0] / "studies" / cohort[1][1]["study_id"], folder / "case_b")
    assert [label for label, _ in server_studies(folder)] == ["study 1", "case_b"]
    with pytest.raises(NotADirectoryError, match="--studies-dir"):
        server_studies(tmp_path / "absent")


SUNNYBROOK = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "sunnybrook"


@pytest.mark.skipif(not SUNNYBROOK.is_dir(), reason="shared Sunnybrook data not available")
def test_a_real_study_named_by_its_patient_id_is_shown_without_it(models):
    """Sunnybrook's study folder is named by its PatientID: the picker labels it `study 1` and the page never
    shows the id; its one cine short-axis stack (10 slices x 20 phases) is in the table, the missing views warned."""
    (label, path), = [(label, path) for label, path in server_studies(SUNNYBROOK) if path.name == "SCD0000301"]
    patient_id = str(pydicom.dcmread(next((path / "cine").iterdir()), stop_before_pixels=True).PatientID)
    assert path.name == patient_id and label.startswith("study ")
    view = analyse(path, models, label)
    assert patient_id not in json.dumps({k: v for k, v in vars(view).items() if k != "montage"})
    assert [row[2:6] for row in view.series if row[7] == "used"] == [["cine", "sax", "cine", "10 x 20"]]
    assert "missing view: lge/sax" in view.warnings and view.findings


def test_findings_that_cannot_be_assessed_show_why_instead_of_a_score():
    """The keys the calibrated pipeline adds (`assessable`, `reason`) are rendered as they come."""
    shown, unassessable = finding_rows({"findings": [
        {"finding": "lge", "score": None, "assessable": False, "reason": "no LGE series in the study"},
        {"finding": "lv_dilation", "score": 0.8, "threshold": 0.5, "present": True, "assessable": True},
    ]})
    assert unassessable == [["lge", "no LGE series in the study"]]
    assert shown == [["lv_dilation", 0.8, 0.5, "present", ""]]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def table_rows(page, elem_id: str) -> list[list[str]]:
    """The cells of a Gradio Dataframe as the browser renders them, row by row."""
    rows = page.locator(f"#{elem_id} [role=row].virtual-row")
    return [row.locator("[role=gridcell]").all_inner_texts() for row in rows.all()]


def test_the_page_in_a_real_browser(models, cohort, study_zip, tmp_path):
    browser_path = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser_path is None:
        missing("Debian's chromium is not installed (apt-get install -y chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("Playwright's Python package is not installed (pip install playwright)")
    port = free_port()
    page_app = build_app(models, studies_dir=cohort[0] / "studies")
    serve(page_app, port=port, block=False)
    outside = []

    def local_only(route):
        if route.request.url.startswith(f"http://127.0.0.1:{port}"):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=browser_path, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.route("**/*", local_only)
            page.goto(f"http://127.0.0.1:{port}/")
            page.locator("#upload input[type=file]").set_input_files(str(study_zip))
            started = time.monotonic()
            page.wait_for_function("document.querySelector('#draft textarea')?.value.length > 0", timeout=60_000)
            series, findings = table_rows(page, "series"), table_rows(page, "findings")
            draft_label, draft = page.locator("#draft").inner_text(), page.locator("#draft textarea").input_value()
            status = page.locator("#status").inner_text()
            shot = tmp_path / "app.png"
            page.screenshot(path=str(shot), full_page=True)
            second = cohort[1][1]["study_id"]
            page.locator("#picker input").click()
            page.get_by_role("option", name=second).click()
            page.locator("#analyse").click()
            page.wait_for_function(f"document.querySelector('#status')?.innerText.startsWith('{second}')", timeout=60_000)
            picked_series = table_rows(page, "series")
            browser.close()
    finally:
        page_app.close()
    print(f"results in {time.monotonic() - started:.1f} s")
    if os.environ.get("CMR_CLIP_SCREENSHOT_DIR"):
        Path(os.environ["CMR_CLIP_SCREENSHOT_DIR"]).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(os.environ["CMR_CLIP_SCREENSHOT_DIR"]) / "app.png")
    assert outside == [], "the page fetched something from outside localhost (it must work offline)"
    assert status.startswith(UPLOADED) and "series" in status
    truth = truth_views(cohort, cohort[1][0]["study_id"])
    assert {(int(row[0]), row[2], row[3]) for row in series} == {(n, seq, v) for n, (seq, v) in truth.items()}
    truth = truth_views(cohort, cohort[1][1]["study_id"])
    assert {(int(row[0]), row[2], row[3]) for row in picked_series} == {(n, seq, v) for n, (seq, v) in truth.items()}
    expected = analyse(study_zip, models)
    assert [(row[0], float(row[1])) for row in findings] == [(row[0], row[1]) for row in expected.findings]
    assert DRAFT_LABEL in draft_label and draft == expected.draft
    assert shot.read_bytes().startswith(b"\x89PNG")



@pytest.fixture(scope="module")
def staged_space(model_dirs, tmp_path_factory):
    """`cmr-clip push --space --dry-run`'s folder, with its exit code."""
    model, index, report = model_dirs
    out = tmp_path_factory.mktemp("space") / "staged"
    code = main(["push", str(model), "--repo-id", "org/cmr-page", "--space", "--index", str(index), "--report-model",
                 str(report), "--dry-run", str(out)])
    return code, out


def test_push_space_dry_run_stages_a_gradio_space(staged_space, model_dirs):
    code, out = staged_space
    assert code == 0
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert {"app.py", "requirements.txt", "README.md", "model/config.json", "model/model.safetensors",
            "report/config.json", "index/manifest.json"} <= files
    card = SpaceCard.load(out / "README.md")
    assert card.data.sdk == "gradio" and card.data.app_file == "app.py"
    requirement = Requirement((out / "requirements.txt").read_text().strip())
    assert requirement.name == "cmr-clip" and requirement.extras == {"app"}
    staged = CMRStudyIndex.load(out / "index", model=out / "model")
    original = CMRStudyIndex.load(model_dirs[1])
    assert staged.study_ids == ["case 1", "case 2"] and staged.impressions == original.impressions
    compile((out / "app.py").read_text(), "app.py", "exec")


@pytest.mark.slow
def test_the_staged_space_serves_the_page(staged_space):
    """The Space's app.py, run as the Hub runs it (`python app.py`, GRADIO_SERVER_PORT set), serves the page."""
    out, port = staged_space[1], free_port()
    server = subprocess.Popen([sys.executable, "app.py"], cwd=out, env={**os.environ, "GRADIO_SERVER_PORT": str(port)},
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        page = wait_for_page(f"http://127.0.0.1:{port}/", server)
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert "cmr-clip: cardiac MRI study" in page


def wait_for_page(url: str, server: subprocess.Popen, seconds: float = 60) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"the Space's app.py exited with {server.returncode}: {server.stderr.read().decode()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.read().decode()
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"the Space's app.py did not serve {url} within {seconds} s")


def test_space_flags_need_space(model_dirs, capsys):
    assert main(["push", str(model_dirs[0]), "--repo-id", "org/x", "--index", str(model_dirs[1])]) == 2
    assert "go with --space" in capsys.readouterr().err


def test_app_command_refuses_a_missing_studies_dir(model_dirs, tmp_path, capsys):
    assert main(["app", "--model", str(model_dirs[0]), "--studies-dir", str(tmp_path / "absent")]) == 2
    assert "--studies-dir" in capsys.readouterr().err
