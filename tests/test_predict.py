"""`cmr-clip predict`: an archive of synthetic studies with a truncated zip, a folder without any image and a
folder holding two studies gives one row per good study and a row with the reason per broken one; a run killed
with SIGKILL and restarted writes the same table as an uninterrupted run; a CSV list and a prepared corpus are
sources too, with CMR-TARGET drafts; `--dtype` reaches the model. The default archive has 8 sources; the `slow`
one has the 40 the issue asks for."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
import torch
from safetensors.torch import load_file
from target_support import save_tiny_target
from test_zero_shot_support import IMAGE_SIZE, NUM_FRAMES, save_random_model, tiny_corpus
from transformers import pipeline

from cmr_clip import CMRStudyProcessor
from cmr_clip.cli import main
from cmr_clip.commands import predict as predict_command
from cmr_clip.commands.base import build_parser, given_fields, precision_kwargs
from cmr_clip.pipelines.batch import PredictSettings, Predictor
from cmr_clip.precision import resolve_precision
from cmr_clip.privacy import study_key
from cmr_clip.synthetic import make_cohort

BROKEN = ("broken-zip", "no-images")
TWO_STUDIES = "two-studies"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_random_model(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("cohort")
    make_cohort(root, 3, seed=11, progress=False, num_workers=2)
    return sorted((root / "studies").iterdir())


def write_archive(root: Path, cohort: list[Path], n_sources: int) -> dict:
    """`n_sources` sources as a PACS export could hand them over: good study folders (copies of the cohort's),
    a zip cut off halfway through the transfer, a folder holding only a file without pixel data (an export of
    the study's report object), and a folder holding two studies. Returns the expected row keys."""
    root.mkdir()
    good = [f"case{i:02d}" for i in range(n_sources - 3)]
    for i, name in enumerate(good):
        shutil.copytree(cohort[i % len(cohort)], root / name)
    archive = shutil.make_archive(str(root / "whole"), "zip", cohort[0])
    data = Path(archive).read_bytes()
    (root / "broken-zip.zip").write_bytes(data[: len(data) // 2])
    Path(archive).unlink()
    (root / "no-images").mkdir()
    header = pydicom.dcmread(next(p for p in sorted(cohort[1].rglob("*")) if p.is_file()))
    del header.PixelData
    header.save_as(root / "no-images" / "report-object.dcm")
    for part in cohort[:2]:
        shutil.copytree(part, root / TWO_STUDIES / part.name)
    uids = [pydicom.dcmread(next(p for p in sorted(part.rglob("*")) if p.is_file()), stop_before_pixels=True).StudyInstanceUID
            for part in cohort[:2]]
    return {"good": good + [f"{TWO_STUDIES}/{study_key(uid)}" for uid in uids], "broken": list(BROKEN)}


def run_predict(archive: Path, out: Path, model_dir: Path, *extra: str) -> int:
    return main(["predict", str(archive), "--model", str(model_dir), "--output-dir", str(out), "--num-workers", "2",
                 "--batch-size", "3", "--estimate", "lvef", "--save-embeddings", "--no-progress", *extra])


def read_table(out: Path) -> pd.DataFrame:
    return pd.read_parquet(out / "predictions.parquet")


def check_archive_table(table: pd.DataFrame, expected: dict) -> None:
    ok, failed = table[table.status == "ok"], table[table.status == "error"]
    assert sorted(ok.study) == sorted(expected["good"])
    assert sorted(failed.study) == sorted(expected["broken"])
    reasons = dict(zip(failed.study, failed.error))
    assert reasons["broken-zip"].startswith("NotAStudyError: no readable DICOM image")
    assert reasons["no-images"].startswith("NoUsableCineError: the study has no cine series")
    probabilities = ok[[c for c in ok.columns if c.endswith("_probability")]].to_numpy(dtype=float)
    assert probabilities.shape[1] == 8 and ((probabilities > 0) & (probabilities < 1)).all()
    assert ok.lvef_estimate.between(15, 75).all()
    assert (ok.view_coverage == 1.0).all() and not ok.low_coverage.any()


def kill_halfway_and_resume(archive: Path, out: Path, model_dir: Path, after: int) -> None:
    """Start predict in a fresh process, SIGKILL it once `after` sources are in its journal, and run it again."""
    command = [sys.executable, "-m", "cmr_clip", "predict", str(archive), "--model", str(model_dir), "--output-dir",
               str(out), "--num-workers", "1", "--batch-size", "1", "--estimate", "lvef", "--save-embeddings",
               "--no-progress"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    journal = out / "journal" / "rank-0.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        if journal.is_file() and len(journal.read_text().splitlines()) >= after:
            break
        time.sleep(0.2)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    done_before = len(journal.read_text().splitlines())
    assert after <= done_before < len(list(archive.iterdir())), "the run was not killed halfway"
    assert not (out / "predictions.parquet").exists()
    assert run_predict(archive, out, model_dir) == 1


def check_same_table(resumed: Path, uninterrupted: Path) -> None:
    pd.testing.assert_frame_equal(read_table(resumed), read_table(uninterrupted), check_exact=False, rtol=1e-5)
    first, second = load_file(resumed / "embeddings.safetensors"), load_file(uninterrupted / "embeddings.safetensors")
    assert first.keys() == second.keys()
    for key in first:
        torch.testing.assert_close(first[key], second[key], rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def archive(tmp_path_factory, cohort):
    root = tmp_path_factory.mktemp("archive")
    return root / "exports", write_archive(root / "exports", cohort, 8)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, archive, model_dir):
    out = tmp_path_factory.mktemp("predictions")
    assert run_predict(archive[0], out, model_dir) == 1  # some studies failed
    return out


def test_the_table_holds_every_good_study_and_the_failures_with_reasons(uninterrupted, archive):
    table = read_table(uninterrupted)
    check_archive_table(table, archive[1])
    csv = pd.read_csv(uninterrupted / "predictions.csv", keep_default_na=False)
    assert list(csv.study) == list(table.study) and list(csv.columns) == list(table.columns)
    embeddings = load_file(uninterrupted / "embeddings.safetensors")
    assert set(embeddings) == set(archive[1]["good"])
    assert all(torch.linalg.norm(e) == pytest.approx(1.0, abs=1e-5) for e in embeddings.values())


def test_a_row_equals_the_pipeline_on_that_study(uninterrupted, archive, model_dir):
    table = read_table(uninterrupted).set_index("study")
    answer = pipeline("zero-shot-cmr", model=str(model_dir))(str(archive[0] / "case01"), estimate="lvef", findings=True)
    for item in answer["findings"]:
        assert table.loc["case01", f"{item['finding']}_probability"] == pytest.approx(item["score"], abs=1e-5)
    assert table.loc["case01", "lvef_estimate"] == pytest.approx(answer["estimates"]["lvef"], abs=1e-3)


def test_a_run_killed_halfway_and_restarted_writes_the_same_table(tmp_path, archive, uninterrupted, model_dir):
    kill_halfway_and_resume(archive[0], tmp_path / "resumed", model_dir, after=3)
    check_same_table(tmp_path / "resumed", uninterrupted)


def test_a_rerun_of_a_finished_run_reads_nothing_again(tmp_path, archive, uninterrupted, model_dir, capsys):
    out = shutil.copytree(uninterrupted, tmp_path / "again")
    assert run_predict(archive[0], out, model_dir) == 1
    assert "8 sources taken from an earlier run" in capsys.readouterr().out
    check_same_table(out, uninterrupted)


def test_a_rerun_with_other_settings_is_refused(tmp_path, archive, uninterrupted, model_dir, capsys):
    out = shutil.copytree(uninterrupted, tmp_path / "again")
    assert run_predict(archive[0], out, model_dir, "--findings", "lge") == 2
    assert "holds a predict run with other settings (findings)" in capsys.readouterr().err


def test_the_dtype_flag_reaches_the_model_and_resuming_compares_the_resolved_precision(tmp_path, archive, uninterrupted,
                                                                                        model_dir, capsys):
    args = build_parser("predict", predict_command).parse_args(
        ["x", "--model", str(model_dir), "--output-dir", "o", "--dtype", "bfloat16"])
    settings = PredictSettings(**{**given_fields(PredictSettings, args), **precision_kwargs(args)})
    assert Predictor(model_dir, settings, "cpu").classify.model.dtype == torch.bfloat16
    # The uninterrupted run used the default, auto: naming the dtype auto picked here resumes it, another is refused.
    picked = str(resolve_precision("auto", device="cpu").dtype).removeprefix("torch.")
    out = shutil.copytree(uninterrupted, tmp_path / "again")
    assert run_predict(archive[0], out, model_dir, "--dtype", picked) == 1
    captured = capsys.readouterr()
    assert "8 sources taken from an earlier run" in captured.out
    assert f"cmr-clip predict: precision {picked} ({picked} asked for)" in captured.err
    other = "float32" if picked == "bfloat16" else "bfloat16"
    assert run_predict(archive[0], out, model_dir, "--dtype", other) == 2
    assert "holds a predict run with other settings (dtype)" in capsys.readouterr().err


def test_a_csv_list_with_drafts_and_a_prepared_corpus_are_sources(tmp_path, archive, model_dir):
    listing = tmp_path / "studies.csv"
    names = ("case02", "no-images", "not-there")
    listing.write_text("path,comment\n" + "".join(f"{archive[0] / name},x\n" for name in names))
    report_model = save_tiny_target(tmp_path / "target")
    assert run_predict(listing, tmp_path / "listed", model_dir, "--report-model", str(report_model)) == 1
    listed = read_table(tmp_path / "listed")
    assert list(listed.status) == ["ok", "error", "error"] and list(listed.study) == list(names)
    assert listed.error[2].startswith("NotAStudyError: the study path does not exist")
    draft = pipeline("cmr-report-generation", model=str(report_model))(str(archive[0] / "case02"))
    assert listed.draft_impression[0] == draft["generated_impression"] and pd.isna(listed.draft_impression[1])

    corpus = tiny_corpus(3)
    corpus.save_to_disk(str(tmp_path / "corpus"))
    CMRStudyProcessor(num_frames=NUM_FRAMES, image_size=IMAGE_SIZE).save_pretrained(tmp_path / "corpus" / "study_processor")
    assert run_predict(tmp_path / "corpus", tmp_path / "from-corpus", model_dir, "--split", "test") == 0
    table = read_table(tmp_path / "from-corpus")
    assert list(table.study) == list(corpus["test"]["study_id"])
    assert np.isfinite(table.lge_probability.to_numpy(dtype=float)).all()


def test_a_source_that_is_not_there_is_a_usage_error(tmp_path, model_dir, capsys):
    assert main(["predict", str(tmp_path / "nothing"), "--model", str(model_dir), "--output-dir", str(tmp_path / "o")]) == 2
    assert "is not a folder, a .csv or .txt list or a prepared corpus" in capsys.readouterr().err


@pytest.mark.slow
def test_forty_studies_killed_halfway_and_restarted(tmp_path, cohort, model_dir):
    expected = write_archive(tmp_path / "exports", cohort, 40)
    assert run_predict(tmp_path / "exports", tmp_path / "whole", model_dir) == 1
    check_archive_table(read_table(tmp_path / "whole"), expected)
    kill_halfway_and_resume(tmp_path / "exports", tmp_path / "resumed", model_dir, after=20)
    check_same_table(tmp_path / "resumed", tmp_path / "whole")


@pytest.mark.slow
def test_two_processes_each_take_a_shard_and_the_first_writes_the_same_table(tmp_path, archive, uninterrupted, model_dir):
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29631",
               "-m", "cmr_clip", "predict", str(archive[0]), "--model", str(model_dir), "--output-dir",
               str(tmp_path / "sharded"), "--num-workers", "0", "--batch-size", "3", "--estimate", "lvef",
               "--save-embeddings", "--no-progress"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 1, result.stderr[-2000:]  # the broken sources fail, as in one process
    shards = [len(p.read_text().splitlines()) for p in sorted((tmp_path / "sharded" / "journal").glob("rank-*.jsonl"))]
    assert shards == [4, 4]
    check_same_table(tmp_path / "sharded", uninterrupted)
