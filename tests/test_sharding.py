"""Sharded preparation: three shards prepared separately (`cmr-clip prepare --num-shards 3 --shard-index I`)
and joined (`cmr-clip prepare-merge`) equal the unsharded corpus; a study's shard depends on its id alone;
incomplete or mismatched shard sets are refused with what to do."""

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from datasets import load_from_disk

from cmr_clip.cli import main as cli
from cmr_clip.data.sharding import ShardsError, merge_shards, shard_of, take_shard
from cmr_clip.privacy import check_vocabulary, load_identity_hashes
from cmr_clip.synthetic import make_cohort

ROOT = Path(__file__).resolve().parents[1]
PREPARE = ["--num-frames", "8", "--image-size", "32", "--val-fraction", "0.25", "--test-fraction", "0.25", "--seed", "5",
           "--field-of-view", "sax=150,2ch=220,3ch=220,4ch=220", "--cine-phases", "cycle"]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("cohort")
    make_cohort(root, 10, seed=11, progress=False)
    # A study that is not one: each shard reports its own failures, the merge keeps them all.
    (root / "studies" / "BROKEN01").mkdir()
    (root / "studies" / "BROKEN01" / "notes.txt").write_text("not DICOM")
    with (root / "reports.jsonl").open("a") as handle:
        handle.write(json.dumps({"study_id": "BROKEN01", "patient_id": "P-BROKEN", "impression": "Normal study."}) + "\n")
    return root


@pytest.fixture(scope="module")
def prepared(cohort, tmp_path_factory):
    root = tmp_path_factory.mktemp("prepared")
    source = ["prepare", "--studies", str(cohort / "studies"), "--reports", str(cohort / "reports.jsonl")]
    # exit 1: some inputs failed (BROKEN01, in one of the shards), the others were prepared
    assert cli([*source, "--output-dir", str(root / "whole"), *PREPARE]) == 1
    codes = [cli([*source, "--output-dir", str(root / "shards"), "--num-shards", "3", "--shard-index", str(index),
                  *PREPARE]) for index in range(3)]
    assert sorted(codes) == [0, 0, 1]
    assert cli(["prepare-merge", "--shards", str(root / "shards"), "--output-dir", str(root / "merged")]) == 1
    return root


def test_the_field_of_view_flag_reaches_the_corpus_processor(prepared):
    from cmr_clip.processing import CMRStudyProcessor

    for corpus in ("whole", "merged"):
        processor = CMRStudyProcessor.from_pretrained(prepared / corpus / "study_processor")
        assert processor.field_of_view_mm == {"sax": 150.0, "2ch": 220.0, "3ch": 220.0, "4ch": 220.0}


def test_the_cine_phases_flag_places_each_cine_entry_on_end_diastole(prepared):
    """`--cine-phases cycle`: every cine entry of the saved layout is `cycle`, and in the corpus each cine entry's
    first frame is its slice's first phase (the R-wave trigger)."""
    from cmr_clip.processing import CMRStudyProcessor

    processor = CMRStudyProcessor.from_pretrained(prepared / "whole" / "study_processor")
    assert {e["phases"] for e in processor.layout["entries"] if e["sequence"] == "cine"} == {"cycle"}
    for row in load_from_disk(str(prepared / "whole"))["train"]:
        metadata = row["metadata"] if isinstance(row["metadata"], dict) else json.loads(row["metadata"])
        firsts = {}
        for frame in metadata["frames_used"]:
            firsts.setdefault(frame["entry"], frame["phase"])
        assert all(phase == 0 for entry, phase in firsts.items() if entry.startswith("cine/")), firsts


def rows(split):
    return [{k: (np.asarray(v).tobytes() if k in ("frames", "slots") else v) for k, v in row.items()}
            for row in split.with_format("numpy", columns=["frames", "slots"], output_all_columns=True)]


def test_three_shards_merged_equal_the_unsharded_corpus(prepared):
    whole, merged = load_from_disk(str(prepared / "whole")), load_from_disk(str(prepared / "merged"))
    shard_sizes = [sum(len(s) for s in load_from_disk(str(d)).values())
                   for d in sorted((prepared / "shards").iterdir()) if (d / "dataset_dict.json").is_file()]
    assert len(shard_sizes) == 3 and all(0 < n < 10 for n in shard_sizes)  # the work was really split
    assert set(merged) == set(whole)
    for split in whole:
        assert merged[split].features == whole[split].features
        assert rows(merged[split]) == rows(whole[split]), split  # same studies, order, frames, text and labels
    assert (prepared / "merged" / "study_processor").is_dir()
    assert [json.loads(line)["study_id"] for line in (prepared / "merged" / "skipped.jsonl").read_text().splitlines()] \
        == ["BROKEN01"]
    report = json.loads((prepared / "merged" / "prepare_report.json").read_text())
    assert report["studies"] == 11 and report["prepared"] == 10 and report["skipped"] == 1 and report["shards"] == 3


def test_merged_identity_hashes_cover_every_shard_so_a_merged_vocabulary_is_checked(prepared, tmp_path):
    """The shards salt their identity hashes alike, so the merge holds one set as large as the unsharded run's, and
    `prepare-merge --train-tokenizer` checks its vocabulary against it."""
    salts = {load_identity_hashes(d)[0] for d in (prepared / "shards").iterdir() if d.is_dir()}
    assert len(salts) == 1
    _, merged = load_identity_hashes(prepared / "merged")
    _, whole = load_identity_hashes(prepared / "whole")
    assert len(merged) == len(whole) > 0
    for folder in (prepared / "shards").iterdir():
        manifest = json.loads((folder / "shard.json").read_text()) if (folder / "shard.json").is_file() else {"places": {}}
        assert set(manifest["places"].values()) <= set(range(1, 12))  # reports rows, nothing more
    assert cli(["prepare-merge", "--shards", str(prepared / "shards"), "--output-dir", str(tmp_path / "m"),
                "--train-tokenizer", "120"]) == 1  # BROKEN01 stays skipped
    check_vocabulary(tmp_path / "m" / "tokenizer", *load_identity_hashes(tmp_path / "m"))


def test_a_patients_studies_share_one_split_across_shards(cohort, prepared):
    patient = {}
    for line in (cohort / "reports.jsonl").read_text().splitlines():
        record = json.loads(line)
        patient[record["study_id"]] = record["patient_id"]
    merged = load_from_disk(str(prepared / "merged"))
    splits_of = {}
    for split, dataset in merged.items():
        for study in dataset["study_id"]:
            splits_of.setdefault(patient[study], set()).add(split)
    assert all(len(s) == 1 for s in splits_of.values())
    # The cohort's repeat studies: a patient with two studies, here in two different shards.
    repeats = [p for p, n in Counter(patient.values()).items() if n > 1]
    assert repeats
    assert any(len({shard_of(s, 3) for s, p in patient.items() if p == who}) > 1 for who in repeats)


def test_a_studys_shard_depends_on_its_id_alone(tmp_path):
    records = [{"study_id": f"1.2.840.{i}", "split": "train"} for i in range(3000)]
    counts = Counter(shard_of(r["study_id"], 3) for r in records)
    assert all(900 < counts[i] < 1100 for i in range(3))  # a hash spreads ids evenly
    kept = {r["study_id"] for r in take_shard(records[:1000], 3, 1)}
    grown = {r["study_id"] for r in take_shard(records[::-1], 3, 1)}  # more studies, another order
    assert kept == grown & {r["study_id"] for r in records[:1000]}


def test_shard_index_out_of_range_is_refused(cohort, tmp_path, capsys):
    assert cli(["prepare", "--studies", str(cohort / "studies"), "--reports", str(cohort / "reports.jsonl"),
                "--output-dir", str(tmp_path), "--num-shards", "3", "--shard-index", "3"]) == 2
    assert "--shard-index must be in 0..2 for --num-shards 3; got 3" in capsys.readouterr().err


def test_merge_refuses_missing_or_mismatched_shards(prepared, tmp_path, capsys):
    partial = tmp_path / "partial"
    shutil.copytree(prepared / "shards", partial)
    shutil.rmtree(partial / "shard-00001-of-00003")
    with pytest.raises(ShardsError, match=r"shard indices \[1\] are missing or unfinished"):
        merge_shards(partial, tmp_path / "out")
    assert cli(["prepare-merge", "--shards", str(partial), "--output-dir", str(tmp_path / "out")]) == 2
    assert "--shard-index" in capsys.readouterr().err
    shutil.copytree(prepared / "shards" / "shard-00001-of-00003", partial / "shard-00001-of-00003")
    (partial / "shard-00001-of-00003" / "prepare_report.json").unlink()  # killed before it finished
    with pytest.raises(ShardsError, match="shard 1 is unfinished"):
        merge_shards(partial, tmp_path / "out")
    with pytest.raises(ShardsError, match="holds no shard"):
        merge_shards(tmp_path / "nothing", tmp_path / "out")


def test_slurm_array_task_prepares_its_shard(cohort, prepared, tmp_path):
    """`examples/slurm_prepare.sbatch` as array task 1 of 3 writes the shard `prepare --shard-index 1` wrote."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "OMP_NUM_THREADS": "1",
           "STUDIES": str(cohort / "studies"), "REPORTS": str(cohort / "reports.jsonl"), "OUT": str(tmp_path),
           "SLURM_ARRAY_TASK_COUNT": "3", "SLURM_ARRAY_TASK_ID": "1", "SLURM_CPUS_PER_TASK": "1"}
    subprocess.run(["bash", str(ROOT / "examples" / "slurm_prepare.sbatch"), *PREPARE], env=env, check=True,
                   capture_output=True)
    ours, expected = load_from_disk(str(tmp_path / "shard-00001-of-00003")), load_from_disk(str(prepared / "shards" / "shard-00001-of-00003"))
    assert set(ours) == set(expected)
    for split in expected:
        assert rows(ours[split]) == rows(expected[split])
