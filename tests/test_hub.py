"""Publishing to the Hub, offline: the generated model card (valid Hub metadata, the metrics, no synthetic
identity), the PHI guard refusing planted identifiers in a card, a config field, a dataset column and an
index, the exact files `push` commits (captured at huggingface_hub's API boundary), and the remote code
loading where cmr_clip cannot be imported, giving the package's scores. The fresh-virtualenv check is slow."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pydicom
import pytest
import torch
from datasets import DatasetDict
from huggingface_hub import HfApi, ModelCard
from test_zero_shot_support import save_random_model, tiny_corpus
from transformers import pipeline

from cmr_clip import cli
from cmr_clip.hub import PHIError, check_no_phi, model_card, push, push_dataset, scan_folder, stage
from cmr_clip.synthetic import make_cohort

METRICS = {
    "test_retrieval": {"n": 8, "text_to_study_R@1": 0.25, "text_to_study_R@5": 0.75, "text_to_study_R@10": 1.0,
                       "study_to_text_R@1": 0.125, "study_to_text_R@5": 0.625, "study_to_text_R@10": 1.0},
    "test_zero_shot": {"auc": {"lv_dilation": 0.8125, "lge": 0.6875}, "thresholds": {"lv_dilation": 0.5},
                       "threshold_rule": "youden_j on the validation split", "n": 8,
                       "lvef_estimate": {"mae": 9.5, "pearson_r": 0.4, "n": 8}},
    "splits": {"train": 8, "validation": 8, "test": 8},
    "settings": {"out": "demo", "studies": 24},
}
REMOTE_FILES = {"configuration_cmr_clip.py", "modeling_cmr_clip.py", "processing_cmr_clip.py",
                "feature_extraction_cmr_study.py", "zero_shot.py", "prompts.py", "scoring.py", "missing_dependency.py"}


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    """A folder shaped like `cmr-clip demo`'s: model, processor, metrics.json, a cohort with identities in its
    DICOM headers, a prepared corpus and a training checkpoint."""
    root = save_random_model(tmp_path_factory.mktemp("hub") / "cmr-clip-demo")
    (root / "metrics.json").write_text(json.dumps(METRICS))
    make_cohort(root / "cohort", 2, seed=3, progress=False, num_workers=1)
    tiny_corpus().save_to_disk(str(root / "corpus"))
    (root / "corpus" / "prepare_report.json").write_text(json.dumps({"studies": 24, "skipped": 0}))
    (root / "checkpoints" / "step-00000001").mkdir(parents=True)
    (root / "checkpoints" / "step-00000001" / "model.safetensors").write_bytes(b"\0")
    return root


def cohort_identities(cohort: Path) -> dict[str, set[str]]:
    """Every identifying value the synthetic cohort wrote: DICOM header identities and report patient ids."""
    found = {"PatientName": set(), "PatientID": set(), "PatientBirthDate": set(), "AccessionNumber": set(),
             "StudyInstanceUID": set()}
    for path in (cohort / "studies").rglob("*"):
        if path.is_file():
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
            for keyword in found:
                if keyword in ds:
                    found[keyword].add(str(ds.data_element(keyword).value))
    found["report patient_id"] = {json.loads(line)["patient_id"] for line in (cohort / "reports.jsonl").read_text().splitlines()}
    return found


@pytest.fixture
def captured(monkeypatch):
    """HfApi's create_repo / create_commit replaced by recorders: the files of the commit, read at commit time."""
    calls = {"repo": [], "files": {}, "commits": 0}

    def create_repo(self, repo_id, **kwargs):
        calls["repo"].append({"repo_id": repo_id, **kwargs})
        return f"https://hub.invalid/{repo_id}"

    def create_commit(self, repo_id, operations, **kwargs):
        calls["commits"] += 1
        for op in operations:
            calls["files"][op.path_in_repo] = Path(op.path_or_fileobj).read_bytes()
        return f"https://hub.invalid/{repo_id}/commit/0"

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "create_commit", create_commit)
    return calls


def test_card_is_valid_hub_metadata_with_the_metrics(demo_dir):
    card = ModelCard(str(model_card(demo_dir, repo_id="org/cmr-clip-demo")))
    data = card.data
    assert data.library_name == "transformers" and data.license == "apache-2.0"
    assert data.pipeline_tag == "video-classification" and "zero-shot-cmr" in data.tags
    results = {r.metric_name: r.metric_value for r in data.eval_results}
    assert results["AUC lv_dilation"] == 0.8125 and results["AUC lge"] == 0.6875
    assert results["text-to-study Recall@5"] == 0.75 and results["LVEF MAE (percentage points)"] == 9.5
    assert all(r.dataset_split == "test" for r in data.eval_results)
    text = card.text
    assert "| zero-shot findings | AUC lv_dilation | 0.812 |" in text
    assert "not a diagnosis" in text and "trust_remote_code=True" in text and "@article" in text
    assert "| train | 8 |" in text and "ge 12, siemens 12" in text and "1.5 T 12, 3 T 12" in text


def test_card_and_upload_carry_no_synthetic_identity(demo_dir, tmp_path):
    identities = cohort_identities(demo_dir / "cohort")
    assert all(identities.values())
    files = stage(demo_dir, tmp_path / "staged")
    for name in files:
        content = (tmp_path / "staged" / name).read_bytes().decode(errors="replace")
        for keyword, values in identities.items():
            leaked = [v for v in values if v in content]
            assert not leaked, f"{name} carries the cohort's {keyword}"


def test_guard_recognises_every_synthetic_identity_format(demo_dir):
    identities = cohort_identities(demo_dir / "cohort")
    for keyword, values in identities.items():
        for value in values:
            with pytest.raises(PHIError):  # under its own field name
                check_no_phi({"source": {keyword.split()[-1]: value}}, "config.json")
    for keyword in ("PatientName", "PatientID", "AccessionNumber", "StudyInstanceUID"):
        for value in identities[keyword]:
            with pytest.raises(PHIError):  # on its own, in free text
                check_no_phi(f"Trained on studies including {value}.", "README.md")


def test_guard_refuses_an_identifier_planted_in_the_card(demo_dir, tmp_path):
    card = ModelCard(str(model_card(demo_dir)) + "\nExample study: GALLOWAY^PRIYA, scanned 2019.\n")
    with pytest.raises(PHIError, match=r"README.md \(model card\): line \d+: looks like a DICOM person name") as error:
        stage(demo_dir, tmp_path / "staged", card=card)
    assert "GALLOWAY" not in str(error.value)  # the refusal names the place, not the identifier
    with pytest.raises(PHIError, match="date of birth"):
        check_no_phi("Patient DOB: 1961-04-12.", "README.md")


def test_guard_refuses_an_identifier_planted_in_a_config_field(demo_dir, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(demo_dir, model, ignore=shutil.ignore_patterns("cohort", "corpus", "checkpoints"))
    config = json.loads((model / "config.json").read_text())
    config["vision_config"]["provenance"] = {"example": {"PatientID": "MRN48213377"}}
    (model / "config.json").write_text(json.dumps(config))
    with pytest.raises(PHIError, match=r"config.json: vision_config.provenance.example.PatientID: is a patient identifier"):
        stage(model, tmp_path / "staged")
    config["vision_config"]["provenance"] = {"example": "exported from 2.25.3118855437715240231157711371"}
    (model / "config.json").write_text(json.dumps(config))
    with pytest.raises(PHIError, match=r"vision_config.provenance.example: looks like a DICOM instance UID"):
        stage(model, tmp_path / "staged2")


def test_guard_refuses_identifier_columns_and_values_in_a_dataset(monkeypatch):
    pushed = []
    monkeypatch.setattr("datasets.DatasetDict.push_to_hub", lambda self, repo_id, **kw: pushed.append((repo_id, kw)))
    corpus = tiny_corpus(n_per_split=2)
    planted = DatasetDict(corpus)
    planted["train"] = planted["train"].add_column("PatientName", ["DRAXLER^ELENA", "UDOKA^HUGO"])
    with pytest.raises(PHIError, match=r"dataset org/corpus\[train\]: column 'PatientName': is a patient identifier column"):
        push_dataset(planted, "org/corpus")
    planted = DatasetDict(corpus)
    planted["test"] = planted["test"].map(lambda row, i: {"impression": row["impression"] + (" ACC512337841" if i else "")},
                                          with_indices=True)
    with pytest.raises(PHIError, match=r"\[test\]: column 'impression' row 1: looks like an accession number"):
        push_dataset(planted, "org/corpus")
    assert pushed == []

    push_dataset(corpus, "org/corpus", private=True)
    assert pushed == [("org/corpus", {"private": True, "token": None})]


def test_guard_passes_normal_content_and_refuses_an_accession_like_index_id(demo_dir, tmp_path):
    from cmr_clip.index import CMRStudyIndex

    index = CMRStudyIndex.from_model(str(demo_dir))
    impressions = ["Normal LV size and function.", "Severe LV dilation with transmural LGE (LVEF 25%)."]
    index.add_embeddings(torch.randn(2, 16), ["SYN00000", "SYN00001"], impressions)
    index.save(tmp_path / "index")
    assert scan_folder(tmp_path / "index") == ["manifest.json", "manifest.parquet"]
    check_no_phi(tiny_corpus(n_per_split=2), "corpus")  # study ids, impressions, labels, metadata pass
    index.add_embeddings(torch.randn(1, 16), ["40012345"], ["No LGE."])
    index.save(tmp_path / "index")  # on this machine's disk a bare number is the user's own key for the study
    with pytest.raises(PHIError, match=r"manifest.parquet: study_id\[2\]: is an identifier field"):
        scan_folder(tmp_path / "index")  # on its way out it is refused
    index.add_embeddings(torch.randn(1, 16), ["MRN 00123456"], ["No LGE."])
    with pytest.raises(PHIError, match=r"manifest.parquet: study_id\[3\]: looks like a medical record number") as error:
        index.save(tmp_path / "refused")  # the index's writer runs the guard before it writes anything
    assert "00123456" not in str(error.value) and list((tmp_path / "refused").iterdir()) == []


def test_push_commits_exactly_the_published_files(demo_dir, captured):
    push(demo_dir, "org/cmr-clip-demo", private=True)
    assert captured["repo"] == [{"repo_id": "org/cmr-clip-demo", "private": True, "exist_ok": True, "repo_type": "model"}]
    assert captured["commits"] == 1
    files = set(captured["files"])
    published = {"model.safetensors", "config.json", "processor_config.json", "tokenizer.json", "tokenizer_config.json",
                 "zero_shot_prompts.json", "README.md"}
    assert published | REMOTE_FILES <= files
    extra = files - published - REMOTE_FILES
    assert all(name.endswith(".py") for name in extra), extra  # the rest of the processing modules' copies
    assert not any(name.startswith(("checkpoints", "corpus", "cohort")) or name == "metrics.json" for name in files)
    config = json.loads(captured["files"]["config.json"])
    assert config["auto_map"] == {"AutoConfig": "configuration_cmr_clip.CMRCLIPConfig",
                                  "AutoModel": "modeling_cmr_clip.CMRCLIPModel"}
    assert config["custom_pipelines"]["zero-shot-cmr"]["impl"] == "zero_shot.ZeroShotCMRPipeline"
    processor = json.loads(captured["files"]["processor_config.json"])
    assert processor["auto_map"]["AutoProcessor"] == "processing_cmr_clip.CMRCLIPProcessor"
    assert ModelCard(captured["files"]["README.md"].decode()).data.pipeline_tag == "video-classification"
    # the saved directory itself is left as it was: no custom_pipelines, which would need trust_remote_code
    assert "custom_pipelines" not in json.loads((demo_dir / "config.json").read_text())


def test_cli_push_passes_private_through_and_refuses_phi(demo_dir, captured, tmp_path, capsys):
    assert cli.main(["push", str(demo_dir), "--repo-id", "org/public"]) == 0
    assert cli.main(["push", str(demo_dir), "--repo-id", "org/private", "--private"]) == 0
    assert [call["private"] for call in captured["repo"]] == [False, True]
    bad = tmp_path / "bad"
    shutil.copytree(demo_dir, bad, ignore=shutil.ignore_patterns("cohort", "corpus", "checkpoints"))
    prompts = json.loads((bad / "zero_shot_prompts.json").read_text()) if (bad / "zero_shot_prompts.json").exists() else {}
    (bad / "zero_shot_prompts.json").write_text(json.dumps({**prompts, "description": "tuned on MRN 4821337"}))
    assert cli.main(["push", str(bad), "--repo-id", "org/bad"]) == 2  # nothing uploaded
    assert "zero_shot_prompts.json: description: looks like a medical record number" in capsys.readouterr().err
    assert len(captured["repo"]) == 2


def test_copied_code_is_the_package_code():
    from cmr_clip.hub import flat_source
    from cmr_clip.modeling import modeling_cmr_clip
    from cmr_clip.pipelines import zero_shot

    source, _ = flat_source(modeling_cmr_clip)
    assert source == Path(modeling_cmr_clip.__file__).read_text()  # already flat: copied byte for byte
    source, needed = flat_source(zero_shot)
    assert "from .processing_cmr_clip import CMRCLIPProcessor" in source and "from .." not in source
    assert {m.__name__.rsplit(".", 1)[-1] for m in needed} == {"calibration", "embeddings", "prompts", "scoring", "studies",
                                                              "processing_cmr_clip", "precision"}


# Run where cmr_clip (and pydicom) cannot be imported: load the published folder with trust_remote_code and
# print the zero-shot answers for already-processed studies; a DICOM path must ask for pydicom.
REMOTE_SCRIPT = textwrap.dedent('''
    import importlib.abc, json, sys

    BLOCKED = {"cmr_clip", "pydicom"}

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {name!r}")

    if sys.argv[4] == "block":
        sys.meta_path.insert(0, Block())
    for name in BLOCKED:
        try:
            __import__(name)
            raise SystemExit(f"{name} is importable")
        except ImportError:
            pass
    import torch
    from transformers import AutoModel, AutoProcessor, pipeline

    folder = sys.argv[1]
    model = AutoModel.from_pretrained(folder, trust_remote_code=True)
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
    assert type(processor.feature_extractor).__module__.startswith("transformers_modules")
    classify = pipeline("zero-shot-cmr", model=folder, trust_remote_code=True)
    studies = [{"pixel_values_videos": x} for x in torch.load(sys.argv[2])]
    answers = classify(studies, candidate_labels=["hcm", "normal"], findings=True, estimate="lvef", batch_size=2)
    try:
        classify(sys.argv[3])
        dicom = "read"
    except ImportError as error:
        dicom = str(error)
    print(json.dumps({"answers": answers, "dicom": dicom}))
''')


def scores(answers: list[dict]) -> dict:
    flat = {}
    for i, answer in enumerate(answers):
        flat.update({(i, "label", x["label"]): x["score"] for x in answer["labels"]})
        flat.update({(i, "finding", x["finding"]): x["score"] for x in answer["findings"]})
        flat.update({(i, "estimate", k): v for k, v in answer["estimates"].items()})
    return flat


def run_remote(python: str, folder: Path, pixels: Path, study: str, tmp_path: Path, block: bool) -> dict:
    script = tmp_path / "remote_load.py"
    script.write_text(REMOTE_SCRIPT)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "HF_"))}
    env.update(HF_HOME=str(tmp_path / "hf-home"), HF_MODULES_CACHE=str(tmp_path / "hf-modules"), HF_HUB_OFFLINE="1")
    result = subprocess.run([python, str(script), str(folder), str(pixels), study, "block" if block else "venv"],
                            capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def remote_matches_package(model_dir: Path, study: str, tmp_path: Path, python: str, block: bool) -> dict:
    """Between the zero-shot pipeline with the package and the published remote code: the largest difference of
    a probability (labels, findings) and the largest relative difference of an estimate (LVEF %)."""
    from cmr_clip import CMRCLIPProcessor

    pixels = CMRCLIPProcessor.from_pretrained(model_dir)(studies=[study, study])["pixel_values_videos"]
    pixels[1] = pixels[1].flip(-1)
    torch.save(pixels, tmp_path / "pixels.pt")
    local = pipeline("zero-shot-cmr", model=str(model_dir))
    expected = scores(local([{"pixel_values_videos": x} for x in pixels], candidate_labels=["hcm", "normal"],
                            findings=True, estimate="lvef"))
    stage(model_dir, tmp_path / "published")
    remote = run_remote(python, tmp_path / "published", tmp_path / "pixels.pt", study, tmp_path, block)
    got = scores(remote["answers"])
    assert got.keys() == expected.keys()
    assert "pip install pydicom" in remote["dicom"]
    probabilities = [abs(got[k] - expected[k]) for k in expected if k[1] != "estimate"]
    estimates = [abs(got[k] - expected[k]) / abs(expected[k]) for k in expected if k[1] == "estimate"]
    return {"probability": max(probabilities), "estimate_relative": max(estimates)}


def test_remote_code_without_cmr_clip_gives_the_package_scores(demo_dir, tmp_path):
    study = str(sorted((demo_dir / "cohort" / "studies").iterdir())[0])
    difference = remote_matches_package(demo_dir, study, tmp_path, sys.executable, block=True)
    assert difference["probability"] < 1e-6 and difference["estimate_relative"] < 1e-6


@pytest.mark.slow
def test_fresh_virtualenv_without_cmr_clip_gives_the_package_scores(tmp_path):
    """In a new virtualenv holding only transformers and torch (no cmr_clip, no pydicom). CMR_CLIP_HUB_MODEL
    may name a trained model folder with a `cohort/` (the demo's) to check instead of a random tiny one."""
    import transformers

    source = os.environ.get("CMR_CLIP_HUB_MODEL")
    if source:
        model_dir = tmp_path / "model"
        shutil.copytree(source, model_dir, ignore=shutil.ignore_patterns("cohort", "corpus", "checkpoints"))
        cohort = Path(source) / "cohort"
    else:
        model_dir = save_random_model(tmp_path / "model")
        cohort = tmp_path / "cohort"
        make_cohort(cohort, 1, seed=3, progress=False, num_workers=1)
    study = str(sorted((cohort / "studies").iterdir())[0])
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    subprocess.run([python, "-m", "pip", "install", "-q", f"torch=={torch.__version__}",
                    f"transformers=={transformers.__version__}"], check=True, timeout=1800)
    difference = remote_matches_package(model_dir, study, tmp_path, python, block=False)
    print(f"package vs fresh-venv remote code: max |probability difference| {difference['probability']:.3g}, "
          f"max relative estimate difference {difference['estimate_relative']:.3g}")
    # float32 sums may be ordered differently in another process (thread count), not more
    assert difference["probability"] < 1e-5 and difference["estimate_relative"] < 1e-6


def test_pipeline_prompt_set_comes_from_a_hub_repo(monkeypatch, tmp_path):
    """Loaded by repo id, the model's folder is the Hub cache: the prompt set (with thresholds) is fetched from it."""
    from cmr_clip.pipelines import prompts as prompts_module
    from cmr_clip.pipelines.prompts import PromptSet, model_prompt_set

    prompts = PromptSet.load(None)
    prompts.thresholds = {"lge": 0.42}
    prompts.save(tmp_path)
    fetched = []

    def cached_file(repo_id, filename, **kwargs):
        fetched.append((repo_id, filename))
        return str(tmp_path / filename)

    monkeypatch.setattr(prompts_module, "cached_file", cached_file)
    assert model_prompt_set("org/cmr-clip-demo").thresholds == {"lge": 0.42}
    assert fetched == [("org/cmr-clip-demo", "zero_shot_prompts.json")]


def test_training_push_to_hub_goes_through_the_guarded_push(captured, tmp_path):
    from test_zero_shot_support import tiny_config, tiny_tokenizer

    from cmr_clip import CMRCLIPModel, CMRStudyProcessor
    from cmr_clip.training import TrainConfig
    from cmr_clip.training.tasks.contrastive import save_final

    config = TrainConfig(data_dir=str(tmp_path / "corpus"), output_dir=str(tmp_path / "out"), push_to_hub="org/trained")
    save_final(CMRCLIPModel(tiny_config()), tiny_tokenizer(), CMRStudyProcessor(num_frames=8, image_size=16), config,
               {"history": []})
    assert captured["repo"][0]["repo_id"] == "org/trained"
    assert {"README.md", "model.safetensors", "zero_shot.py"} <= set(captured["files"])


REMOTE_REPORT_SCRIPT = textwrap.dedent('''
    import importlib.abc, json, sys

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {"cmr_clip", "pydicom"}:
                raise ModuleNotFoundError(f"No module named {name!r}")

    sys.meta_path.insert(0, Block())
    import torch
    from transformers import pipeline

    draft = pipeline("cmr-report-generation", model=sys.argv[1], trust_remote_code=True)
    assert type(draft.model).__module__.startswith("transformers_modules"), type(draft.model).__module__
    studies = [{"pixel_values_videos": x} for x in torch.load(sys.argv[2])]
    print(json.dumps(draft(studies, max_new_tokens=16)))
''')


def test_published_cmr_target_drafts_the_same_without_cmr_clip(tmp_path):
    """A CMR-TARGET published with remote code: the report pipeline, loaded where cmr_clip cannot be imported,
    drafts what the package drafts (greedy)."""
    from target_support import random_videos, save_tiny_target

    model_dir = save_tiny_target(tmp_path / "target")
    pixels = random_videos(2, seed=11)
    torch.save(pixels, tmp_path / "pixels.pt")
    expected = pipeline("cmr-report-generation", model=str(model_dir))([{"pixel_values_videos": x} for x in pixels],
                                                                       max_new_tokens=16)
    files = stage(model_dir, tmp_path / "published")
    assert "modeling_cmr_target.py" in files and "processing_cmr_target.py" in files
    config = json.loads((tmp_path / "published" / "config.json").read_text())
    assert config["custom_pipelines"]["cmr-report-generation"]["impl"].endswith("CMRReportGenerationPipeline")
    script = tmp_path / "remote_report.py"
    script.write_text(REMOTE_REPORT_SCRIPT)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "HF_"))}
    env.update(HF_HOME=str(tmp_path / "hf-home"), HF_MODULES_CACHE=str(tmp_path / "hf-modules"), HF_HUB_OFFLINE="1")
    result = subprocess.run([sys.executable, str(script), str(tmp_path / "published"), str(tmp_path / "pixels.pt")],
                            capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == expected
