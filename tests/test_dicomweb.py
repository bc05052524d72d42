"""Reading studies from a real PACS (Orthanc with its DICOMweb plugin, tests/orthanc_server.py) gives what reading
the same files from disk gives, fetching only the frames the processor decodes; failures are typed errors.

Three synthetic studies (Siemens, GE, Philips enhanced multi-frame) are written to disk and stored in Orthanc
through STOW-RS. Requests are counted by a `requests.Session` that logs what it sends to the real server.
`cmr-clip predict` over a QIDO-RS query writes the table it writes over the exported folders, and stores its
answers back as SRs that read back as the table's rows.
"""

from __future__ import annotations

import importlib.util
import io
import json
import pickle
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
import requests
import torch
from datasets import load_from_disk
from orthanc_server import OrthancServer, store_folder
from test_zero_shot_support import save_random_model

from cmr_clip.cli import main
from cmr_clip.pipelines.batch import PredictSettings, list_sources, predict
from cmr_clip.privacy import study_key
from cmr_clip.processing import CMRStudyProcessor, StudyLayout, read_studies, read_study, select_frames
from cmr_clip.processing.decoding import decode_selected, frame_key
from cmr_clip.processing.dicom_results import read_report_sr, store_results
from cmr_clip.processing.dicomweb import DICOMwebServer
from cmr_clip.processing.display import study_summary
from cmr_clip.processing.errors import (
    CMRStudyError,
    PACSAuthenticationError,
    PACSUnreachableError,
    StudyNotOnServerError,
)
from cmr_clip.processing.identity import read_identity
from cmr_clip.synthetic import make_cohort

# A seed per study, so that their UIDs differ; with seed 4 the Philips cines are enhanced multi-frame (checked below).
SEEDS = {"siemens": 1, "ge": 2, "philips": 4}
VENDORS = tuple(SEEDS)
UNKNOWN_UID = "1.2.826.0.1.3680043.8.498.99999999999999999999999999999"


class CountingSession(requests.Session):
    """A plain requests session that records the path of every request it sends."""

    def __init__(self):
        super().__init__()
        self.paths: list[str] = []
        self.before_request = None

    def request(self, method, url, *args, **kwargs):
        if self.before_request is not None:
            self.before_request(url)
        self.paths.append(url)
        return super().request(method, url, *args, **kwargs)

    def frame_requests(self) -> int:
        return sum("/frames/" in path for path in self.paths)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> dict:
    """vendor -> the study's folder on disk."""
    root = tmp_path_factory.mktemp("dicomweb-cohort")
    folders = {}
    for vendor in VENDORS:
        make_cohort(root / vendor, 1, seed=SEEDS[vendor], vendors=[vendor], progress=False, num_workers=1)
        folders[vendor] = next((root / vendor / "studies").iterdir())
    return folders


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory, cohort):
    server = OrthancServer(tmp_path_factory.mktemp("orthanc")).start()
    try:
        for folder in cohort.values():
            store_folder(server, folder)
        yield server
    finally:
        server.stop()


def connect(orthanc, retries: int = 2, auth=None) -> tuple[DICOMwebServer, CountingSession]:
    session = CountingSession()
    session.auth = auth or orthanc.auth
    return DICOMwebServer(orthanc.url, session=session, timeout=10, retries=retries), session


def study_uid(folder: Path) -> str:
    first = next(path for path in sorted(folder.rglob("*")) if path.is_file())
    return str(pydicom.dcmread(first, stop_before_pixels=True).StudyInstanceUID)


def test_the_philips_study_is_enhanced_multi_frame(cohort):
    frames = [int(pydicom.dcmread(path, stop_before_pixels=True).get("NumberOfFrames") or 1)
              for path in cohort["philips"].rglob("*") if path.is_file()]
    assert max(frames) > 1


@pytest.mark.parametrize("vendor", VENDORS)
def test_a_study_over_dicomweb_reads_as_from_disk_fetching_only_the_decoded_frames(orthanc, cohort, vendor):
    processor = CMRStudyProcessor()
    disk_study = read_study(cohort[vendor])
    server, session = connect(orthanc)
    source = server.study(study_uid(cohort[vendor]))

    remote_study = read_study(source)
    assert study_summary(remote_study, processor.study_layout) == study_summary(disk_study, processor.study_layout)
    after_headers = session.frame_requests()

    remote = processor(source)["pixel_values_videos"]
    assert torch.equal(remote, processor(cohort[vendor])["pixel_values_videos"])

    # What the processor decodes: the anatomy step's short-axis frames (named in the classification's reasons)
    # during the header pass, then each distinct frame the layout selects, once.
    selection = select_frames(disk_study, processor.study_layout)
    selected = {(id(item.series), item.slice_index, item.phase_index) for item in selection.frames if item is not None}
    named = {int(n) for s in disk_study.series for r in s.reasons for n in re.findall(r"(\d+) frames decoded", r)}
    anatomy = named.pop() if named else 0  # every long-axis series names the one anatomy step
    assert not named
    assert after_headers == anatomy
    assert session.frame_requests() == 2 * anatomy + len(selected)  # the processor read the study again
    assert source.frames_retrieved == session.frame_requests() and source.instances_retrieved == 0
    images = sum(len(series.frames) for series in disk_study.series)
    assert anatomy + len(selected) < images


def test_the_identity_pass_reads_the_same_identity_from_the_server(orthanc, cohort):
    server, _ = connect(orthanc)
    folder = cohort["ge"]
    assert read_identity(server.study(study_uid(folder))).tokens() == read_identity(folder).tokens()


def test_a_qido_query_by_date_range_finds_only_the_mr_studies_in_it(orthanc, cohort):
    server, _ = connect(orthanc)
    first = next(path for path in sorted(cohort["siemens"].rglob("*")) if path.is_file())
    date = str(pydicom.dcmread(first, stop_before_pixels=True).StudyDate)
    found = server.query(StudyDate=f"{date}-{date}").study_uids()
    assert study_uid(cohort["siemens"]) in found
    read = [study.study_instance_uid for study in read_studies(server.query(StudyDate=f"{date}-{date}"))]
    assert read == found
    assert set(server.query().study_uids()) == {study_uid(folder) for folder in cohort.values()}
    with pytest.raises(StudyNotOnServerError, match="dates as YYYYMMDD"):
        server.query(StudyDate="19000101-19000102").study_uids()


def test_a_url_and_a_study_uid_read_like_a_folder(orthanc, cohort):
    session = requests.Session()
    session.auth = orthanc.auth
    uid = study_uid(cohort["ge"])
    study = read_study(DICOMwebServer(orthanc.url, session=session), study=uid)
    assert study_summary(study) == study_summary(read_study(cohort["ge"]))


def test_refused_credentials_raise_a_typed_error_naming_the_fix(orthanc, cohort):
    uid = study_uid(cohort["ge"])
    server, _ = connect(orthanc, auth=("cmrclip", "wrong"))
    with pytest.raises(PACSAuthenticationError, match=r"HTTP 401.*Bearer") as caught:
        read_study(server.study(uid))
    assert uid not in str(caught.value) and "cmrclip" not in str(caught.value)
    assert isinstance(caught.value, CMRStudyError)


def test_a_study_the_server_lacks_raises_a_typed_error_without_its_uid(orthanc):
    server, _ = connect(orthanc)
    with pytest.raises(StudyNotOnServerError, match="check the StudyInstanceUID") as caught:
        read_study(server.study(UNKNOWN_UID))
    assert UNKNOWN_UID not in str(caught.value)


def test_a_batch_records_each_failure_and_goes_on_when_the_server_stops(tmp_path, cohort):
    orthanc = OrthancServer(tmp_path).start()
    try:
        for vendor in ("siemens", "ge"):
            store_folder(orthanc, cohort[vendor])
        server, session = connect(orthanc, retries=1)
        last = study_uid(cohort["ge"])

        def stop_before_the_last_study(url):
            if last in url:
                orthanc.stop()

        session.before_request = stop_before_the_last_study
        sources = [server.study(study_uid(cohort["siemens"])), server.study(UNKNOWN_UID), server.study(last)]
        batch = CMRStudyProcessor()(sources, skip_errors=True)
    finally:
        orthanc.stop()
    assert batch["pixel_values_videos"].shape[0] == 1
    assert [(e["index"], e["error"]) for e in batch["errors"]] == [(1, "StudyNotOnServerError"), (2, "PACSUnreachableError")]
    assert "check the URL, that the server is running" in batch["errors"][1]["message"]
    assert all(UNKNOWN_UID not in e["message"] and last not in e["message"] for e in batch["errors"])
    with pytest.raises(PACSUnreachableError):
        read_study(server.study(last))


ANSWER = {  # a zero-shot-cmr pipeline result's shape (see pipelines/zero_shot.py postprocess)
    "findings": [{"finding": "lge", "score": 0.8731246, "threshold": 0.5, "present": True},
                 {"finding": "lv_dilation", "score": 0.0412877, "threshold": 0.5, "present": False},
                 {"finding": "pericardial_effusion", "score": 0.3300012}],
    "estimates": {"lvef": 57.25},
    "warnings": [],
}


def test_results_go_back_to_the_pacs_as_a_structured_report_of_the_study(tmp_path, cohort):
    orthanc = OrthancServer(tmp_path).start()  # its own server: the SR joins the study, the other tests' must not change
    try:
        store_folder(orthanc, cohort["philips"])
        check_results_stored(orthanc, cohort)
    finally:
        orthanc.stop()


def check_results_stored(orthanc, cohort):
    server, _ = connect(orthanc)
    uid = study_uid(cohort["philips"])
    source = server.study(uid)
    study = read_study(source)
    sop_uid, montage_uid = store_results(ANSWER, source, impression="Draft: mid-wall enhancement.", montage=study)

    check_montage_stored(server, uid, montage_uid, study)
    found = server.client.search_for_series(uid, search_filters={"Modality": "SR"})
    assert len(found) == 1
    series_uid = found[0]["0020000E"]["Value"][0]
    back = server.client.retrieve_instance(uid, series_uid, sop_uid)
    back = pydicom.dcmread(io.BytesIO(_saved(back)))  # as a file another program would read it
    assert back.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.33"  # Comprehensive SR
    assert back.StudyInstanceUID == uid
    headers = {str(ds.SeriesInstanceUID) for ds in source.headers()}
    referenced = {str(s.SeriesInstanceUID) for s in back.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence}
    assert referenced == headers
    first = next(path for path in sorted(cohort["philips"].rglob("*")) if path.is_file())
    original = pydicom.dcmread(first, stop_before_pixels=True)
    assert (back.PatientID, back.PatientName) == (original.PatientID, original.PatientName)
    assert original.AccessionNumber and not back.AccessionNumber and not back.get("ReferringPhysicianName")
    assert not back.get("StudyDate") and "InstitutionName" not in back
    assert back.VerificationFlag == "UNVERIFIED" and "not for diagnosis" in back.SeriesDescription

    report = read_report_sr(back)
    assert "Research use only" in report["notice"] and report["impression"] == "Draft: mid-wall enhancement."
    assert report["estimates"] == ANSWER["estimates"]
    expected = [{key: value for key, value in f.items() if key != "threshold"} for f in ANSWER["findings"]]
    assert report["findings"] == expected


def check_montage_stored(server, uid, montage_uid, study):
    """The montage is a Secondary Capture in the study holding the selected frames as the processor decodes them."""
    found = server.client.search_for_series(uid, search_filters={"Modality": "OT"})
    assert len(found) == 1
    back = pydicom.dcmread(io.BytesIO(_saved(server.client.retrieve_instance(uid, found[0]["0020000E"]["Value"][0], montage_uid))))
    assert back.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7" and back.StudyInstanceUID == uid
    assert not back.AccessionNumber and "not for diagnosis" in back.SeriesDescription
    selection = select_frames(study, StudyLayout.default())
    images = decode_selected(selection)
    pixels = back.pixel_array
    first = next(item for item in selection.frames if item is not None)
    tile = images[frame_key(first)]
    index = selection.frames.index(first)
    height, width = pixels.shape[0] // -(-len(selection.frames) // 8), pixels.shape[1] // 8
    top, left = (index // 8) * height, (index % 8) * width
    assert np.array_equal(pixels[top:top + tile.shape[0], left:left + tile.shape[1]], tile)


def _saved(ds) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_prepare_from_the_pacs_builds_the_corpus_prepare_builds_from_disk(orthanc, cohort, tmp_path, monkeypatch):
    studies = tmp_path / "studies"
    studies.mkdir()
    disk_rows, pacs_rows = [], []
    for number, (vendor, folder) in enumerate(cohort.items()):
        (studies / vendor).symlink_to(folder)
        report = json.loads((folder.parents[1] / "reports.jsonl").read_text().splitlines()[0])
        row = {"study_id": vendor, "impression": report["impression"], "split": ["train", "validation", "test"][number]}
        disk_rows.append(row)
        first = pydicom.dcmread(next(p for p in sorted(folder.rglob("*")) if p.is_file()), stop_before_pixels=True)
        key = {"accession_number": str(first.AccessionNumber)} if vendor == "ge" else {"study_instance_uid": study_uid(folder)}
        pacs_rows.append({**row, **key})
    (tmp_path / "disk.jsonl").write_text("".join(json.dumps(row) + "\n" for row in disk_rows))
    (tmp_path / "pacs.jsonl").write_text("".join(json.dumps(row) + "\n" for row in pacs_rows))
    small = ["--num-frames", "8", "--image-size", "32"]

    assert main(["prepare", "--studies", str(studies), "--reports", str(tmp_path / "disk.jsonl"),
                 "--output-dir", str(tmp_path / "disk"), *small]) == 0
    monkeypatch.setenv("CMR_CLIP_DICOMWEB_PASSWORD", orthanc.auth[1])
    assert main(["prepare", "--dicomweb", orthanc.url, "--dicomweb-user", orthanc.auth[0], "--reports",
                 str(tmp_path / "pacs.jsonl"), "--output-dir", str(tmp_path / "pacs"), *small]) == 0

    disk, pacs = load_from_disk(str(tmp_path / "disk")), load_from_disk(str(tmp_path / "pacs"))
    assert sorted(disk) == sorted(pacs) == ["test", "train", "validation"]
    for split in disk:
        assert disk[split].column_names == pacs[split].column_names
        for column in disk[split].column_names:
            left, right = disk[split].with_format("numpy")[column], pacs[split].with_format("numpy")[column]
            assert len(left) == len(right) and all(_same(a, b) for a, b in zip(left, right)), (split, column)
    written = b"".join(path.read_bytes() for path in (tmp_path / "pacs").rglob("*") if path.is_file())
    for row in pacs_rows:
        for key in ("accession_number", "study_instance_uid"):
            assert key not in row or row[key].encode() not in written


def _same(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return np.array_equal(a, b, equal_nan=a.dtype.kind == "f")  # a missing field strength is NaN in both


def test_prepare_without_credentials_records_the_refusal_for_every_study(orthanc, cohort, tmp_path, capsys):
    rows = [{"study_id": vendor, "impression": "Normal study.", "study_instance_uid": study_uid(folder)}
            for vendor, folder in cohort.items()]
    (tmp_path / "pacs.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    code = main(["prepare", "--dicomweb", orthanc.url, "--reports", str(tmp_path / "pacs.jsonl"),
                 "--output-dir", str(tmp_path / "out"), "--num-frames", "8", "--image-size", "32"])
    assert code == 2
    skipped = [json.loads(line) for line in (tmp_path / "out" / "skipped.jsonl").read_text().splitlines()]
    assert [item["error"] for item in skipped] == ["PACSAuthenticationError"] * 3
    assert all("--dicomweb-token" in item["message"] for item in skipped)


def test_inspect_shows_a_pacs_study_as_it_shows_its_folder(orthanc, cohort, capsys, monkeypatch):
    folder = cohort["siemens"]
    assert main(["inspect", str(folder)]) == 0
    from_disk = capsys.readouterr().out
    monkeypatch.setenv("CMR_CLIP_DICOMWEB_PASSWORD", orthanc.auth[1])
    assert main(["inspect", "--dicomweb", orthanc.url, "--dicomweb-user", orthanc.auth[0], "--study", study_uid(folder)]) == 0
    shown = capsys.readouterr().out
    assert shown.split("\n", 1)[1] == from_disk  # after the study's heading (index and key), the same
    assert study_uid(folder) not in shown


class NoFrameRetrieval(CountingSession):
    """A transport in front of the real server that turns frame requests into a path the server does not
    have (404), as a server without WADO-RS frame retrieval answers."""

    def request(self, method, url, *args, **kwargs):
        return super().request(method, url.replace("/frames/", "/no-frames/"), *args, **kwargs)


def test_without_frame_retrieval_each_needed_instance_is_fetched_once(orthanc, cohort):
    session = NoFrameRetrieval()
    session.auth = orthanc.auth
    source = DICOMwebServer(orthanc.url, session=session).study(study_uid(cohort["ge"]))
    processor = CMRStudyProcessor()
    assert torch.equal(processor(source)["pixel_values_videos"], processor(cohort["ge"])["pixel_values_videos"])
    instances = [path for path in session.paths if "/instances/" in path and "/no-frames/" not in path]
    assert len(instances) == len(set(instances)) == source.instances_retrieved > 0
    assert source.frames_retrieved == 0
    assert sum("/no-frames/" in path for path in session.paths) == 1  # asked once, then whole instances


def test_the_dicomweb_benchmark_runs_and_prints_its_ratio(capsys):
    spec = importlib.util.spec_from_file_location("benchmark_dicomweb", Path(__file__).parents[1] / "benchmarks" / "dicomweb.py")
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    assert benchmark.main(["--size", "small", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^speed-up \(baseline / ours\): \d+\.\d\dx; data received: \d+\.\dx less$", out, re.M), out


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_random_model(tmp_path_factory.mktemp("model"))


def predict_args(out: Path, model_dir: Path, *extra: str) -> list[str]:
    return ["--model", str(model_dir), "--output-dir", str(out), "--num-workers", "1", "--estimate", "lvef",
            "--no-progress", "--dtype", "float32", *extra]


def pacs_flags(orthanc, monkeypatch) -> list[str]:
    monkeypatch.setenv("CMR_CLIP_DICOMWEB_PASSWORD", orthanc.auth[1])
    return ["--dicomweb", orthanc.url, "--dicomweb-user", orthanc.auth[0]]


def test_predict_over_a_qido_query_writes_the_table_of_the_exported_folders(orthanc, cohort, model_dir, tmp_path,
                                                                           monkeypatch):
    exports = tmp_path / "exports"
    exports.mkdir()
    for vendor, folder in cohort.items():
        (exports / vendor).symlink_to(folder)
    assert main(["predict", str(exports), *predict_args(tmp_path / "disk", model_dir)]) == 0
    dates = sorted(str(pydicom.dcmread(next(p for p in sorted(f.rglob("*")) if p.is_file()),
                                       stop_before_pixels=True).StudyDate) for f in cohort.values())
    query = ["--qido", f"StudyDate={dates[0]}-{dates[-1]}"]
    assert main(["predict", *pacs_flags(orthanc, monkeypatch), *query, *predict_args(tmp_path / "pacs", model_dir)]) == 0

    # Documented difference: a PACS study's row is keyed by its study key, a folder's by the folder's name.
    keys = {study_key(study_uid(folder)): vendor for vendor, folder in cohort.items()}
    disk = pd.read_parquet(tmp_path / "disk" / "predictions.parquet").set_index("study").sort_index()
    pacs = pd.read_parquet(tmp_path / "pacs" / "predictions.parquet")
    assert sorted(pacs.study) == sorted(keys)
    pacs = pacs.assign(study=pacs.study.map(keys)).set_index("study").sort_index()
    assert (disk.status == "ok").all() and disk.columns.str.endswith("_probability").sum() == 8
    pd.testing.assert_frame_equal(pacs, disk, check_exact=False, rtol=1e-6)
    written = b"".join(path.read_bytes() for path in (tmp_path / "pacs").rglob("*") if path.is_file())
    assert not any(study_uid(folder).encode() in written for folder in cohort.values())


def test_pacs_sources_pickle_for_dataloader_workers(orthanc, cohort):
    session = requests.Session()  # its credentials pickle with it (a subclass's own attributes would not)
    session.auth = orthanc.auth
    sources, _ = list_sources(DICOMwebServer(orthanc.url, session=session).query())
    assert sorted(s.name for s in sources) == sorted(study_uid(f) for f in cohort.values())
    copy = pickle.loads(pickle.dumps(sources[0]))
    assert read_study(copy.location).study_instance_uid == sources[0].name


class RefusingStores(CountingSession):
    """A transport in front of the real server that sends STOW-RS to a path the server does not have (404)."""

    def request(self, method, url, *args, **kwargs):
        return super().request(method, url + "-refused" if method == "POST" else url, *args, **kwargs)


def test_predict_stores_an_sr_and_montage_per_study_the_sr_reading_back_as_its_row(tmp_path, cohort, model_dir, monkeypatch):
    orthanc = OrthancServer(tmp_path / "orthanc").start()  # its own server: the SR joins the study
    try:
        store_folder(orthanc, cohort["philips"])
        uid = study_uid(cohort["philips"])
        flags = [*pacs_flags(orthanc, monkeypatch), "--study", uid, "--store-results", "--store-montage"]
        assert main(["predict", *flags, *predict_args(tmp_path / "out", model_dir)]) == 0
        row = pd.read_parquet(tmp_path / "out" / "predictions.parquet").iloc[0]
        assert (row.study, row.status, row.sr_status) == (study_key(uid), "ok", "stored")

        server, _ = connect(orthanc)
        found = server.client.search_for_instances(uid, search_filters={"Modality": "SR"})
        assert len(found) == 1
        back = server.client.retrieve_instance(uid, found[0]["0020000E"]["Value"][0], found[0]["00080018"]["Value"][0])
        back = pydicom.dcmread(io.BytesIO(_saved(back)))
        assert back.StudyInstanceUID == uid and back.VerificationFlag == "UNVERIFIED"
        assert len(server.client.search_for_series(uid, search_filters={"Modality": "OT"})) == 1  # the montage
        report = read_report_sr(back)
        assert report["estimates"] == {"lvef": pytest.approx(row.lvef_estimate, rel=1e-6)}
        assert {f["finding"]: f["score"] for f in report["findings"]} == pytest.approx(
            {name[: -len("_probability")]: row[name] for name in row.index if name.endswith("_probability")}, rel=1e-6)
        decisions = {f["finding"]: "present" if f["present"] else "absent" for f in report["findings"] if "present" in f}
        assert decisions == {name[: -len("_decision")]: row[name] for name in row.index
                             if name.endswith("_decision") and row[name]}

        # A store the server refuses is recorded in the row; the study's answer is kept.
        session = RefusingStores()
        session.auth = orthanc.auth
        source = DICOMwebServer(orthanc.url, session=session, timeout=10).study(uid)
        settings = PredictSettings(num_workers=0, progress=False, store_results=True, dtype="float32")
        assert predict(source, tmp_path / "refused", model_dir, settings)["done"] == 1
        row = pd.read_parquet(tmp_path / "refused" / "predictions.parquet").iloc[0]
        assert row.status == "ok" and row.sr_status.startswith("failed: StudyNotOnServerError") and uid not in row.sr_status
    finally:
        orthanc.stop()


def test_store_results_without_a_pacs_is_a_usage_error(cohort, model_dir, tmp_path, capsys):
    assert main(["predict", str(cohort["ge"].parent), "--store-results", *predict_args(tmp_path / "o", model_dir)]) == 2
    assert "--store-results go with --dicomweb" in capsys.readouterr().err
