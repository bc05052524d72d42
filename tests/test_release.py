"""The published model in one command, offline: `cmr-clip convert-original makiyeah/CMRCLIP --out DIR` against a
stand-in for the Hub (huggingface_hub's own cache, pre-filled as it lays files out, read with HF_HUB_OFFLINE=1).

The stand-in release holds the golden fixture's weights (`../shared/fixtures/reference_cmrclip`, made with the
authors' code) pickled as `pytorch_model.bin` under the release's key layout (`module.` prefixes, the BERT
`position_ids` buffer), with a config.json in the release's form (dimensions from the fixture, the text tower
named as the release names it) and a model card stating a licence; the text tower's repo holds a vocabulary
written here and the fixture's BERT config. Expected values come from the fixture's golden vectors, the
specification (docs/reference-model.md: the layout's composition, 256/224 resize, ImageNet statistics) and
the planted files themselves (their sha256, the cache's commit), never from the converter's constants.
"""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from safetensors.torch import load_file
from test_zero_shot_support import WORDS, tiny_tokenizer
from transformers import AutoModel, AutoProcessor, BertConfig, pipeline

from cmr_clip import CMRCLIPConfig, CMRCLIPModel, CMRCLIPProcessor, cli
from cmr_clip.hub import scan_folder
from cmr_clip.modeling.convert_original_checkpoint import conversion_check, convert, load_original_state_dict
from cmr_clip.modeling.reference_forward import reference_project, reference_text_features, reference_video_features
from cmr_clip.pipelines.prompts import PromptSet
from cmr_clip.release import release_processor
from cmr_clip.synthetic import make_cohort

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / ".." / "shared" / "fixtures" / "reference_cmrclip"
RELEASE_REPO, TEXT_REPO = "makiyeah/CMRCLIP", "emilyalsentzer/Bio_ClinicalBERT"
RELEASE_COMMIT, TEXT_COMMIT = "3f1c" * 10, "b7e2" * 10
STATED_LICENSE = "cc-by-nc-4.0"
# docs/reference-model.md, "Input conventions of the release".
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
REFERENCE_COMPOSITION = [  # (sequence, view, slices, phases, repeated as many times as LGE SAX has slices)
    ("cine", "4ch", "middle", "all", None), ("cine", "sax", "middle", "all", None), ("lge", "sax", "all", "first", None),
    ("lge", "4ch", "middle", "first", "lge/sax"), ("lge", "2ch", "middle", "first", "lge/sax"),
    ("lge", "3ch", "middle", "first", "lge/sax"),
]


def fixture_state() -> dict[str, torch.Tensor]:
    return load_file(str(FIXTURE / "reference_state_dict.safetensors"))


def release_bin(state: dict[str, torch.Tensor]) -> bytes:
    """A `pytorch_model.bin` as the release has it: DataParallel's `module.` prefixes and BERT's position_ids."""
    state = dict(state)
    state["text_model.embeddings.position_ids"] = torch.arange(64)[None]
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"release-{os.getpid()}.bin"
    torch.save({f"module.{k}": v for k, v in state.items()}, path)
    data = path.read_bytes()
    path.unlink()
    return data


def release_config() -> dict:
    """The fixture's config in the released form: video dimensions as given, the text tower by name only."""
    fixture = json.loads((FIXTURE / "reference_config.json").read_text())
    return {"video_params": fixture["video_params"],
            "text_params": {"model": TEXT_REPO, "pretrained": True, "input": "text"},
            "projection_dim": fixture["projection_dim"], "projection": "minimal", "load_checkpoint": ""}


def release_files(state: dict[str, torch.Tensor]) -> dict[str, bytes]:
    card = f"---\nlicense: {STATED_LICENSE}\ntags:\n- cardiac-mri\n---\n\n# CMR-CLIP\n\nReleased weights.\n"
    return {"pytorch_model.bin": release_bin(state), "config.json": json.dumps(release_config()).encode(),
            "README.md": card.encode()}


def text_files() -> dict[str, bytes]:
    """Bio_ClinicalBERT's repo as a tokenizer needs it: a cased WordPiece vocab.txt and the BERT config.json."""
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS + ["LV", "RV", "LGE", "##s", "##ed"]
    bert = json.loads((FIXTURE / "reference_config.json").read_text())["text_params"]["bert_config"]
    return {"vocab.txt": ("\n".join(vocab) + "\n").encode(), "config.json": json.dumps(bert).encode()}


def fill_hub_cache(cache: Path, repo_id: str, commit: str, files: dict[str, bytes]) -> None:
    """Files placed as huggingface_hub's cache keeps them: content-addressed blobs, a snapshot folder per commit
    of links to them, and refs/main naming the commit."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    for name, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = repo / "snapshots" / commit / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)


def write_folder(folder: Path, files: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    files = release_files(fixture_state())
    fill_hub_cache(root / "cache", RELEASE_REPO, RELEASE_COMMIT, files)
    fill_hub_cache(root / "cache", TEXT_REPO, TEXT_COMMIT, text_files())
    return {"root": root, "cache": root / "cache", "bin_sha256": hashlib.sha256(files["pytorch_model.bin"]).hexdigest(),
            "config_sha256": hashlib.sha256(files["config.json"]).hexdigest()}


@pytest.fixture(scope="module")
def converted(hub):
    """`cmr-clip convert-original makiyeah/CMRCLIP --out DIR` in a fresh process that can only read the cache."""
    out = hub["root"] / "cmr-clip-release"
    result = run_offline(hub, RELEASE_REPO, "--out", str(out))
    assert result.returncode == 0, result.stderr
    return {"out": out, "stdout": result.stdout, "stderr": result.stderr}


def run_offline(hub, *args) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_CACHE": str(hub["cache"]), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "cmr_clip", "convert-original", *args], capture_output=True, text=True,
                          env=env, timeout=600)


@pytest.fixture(scope="module")
def reference_io():
    return load_file(str(FIXTURE / "reference_io.safetensors"))


def test_command_writes_a_complete_folder_from_the_hub_cache(converted):
    names = {p.name for p in converted["out"].iterdir()}
    assert {"model.safetensors", "config.json", "processor_config.json", "tokenizer.json", "zero_shot_prompts.json",
            "README.md", "provenance.json", "conversion_check.json"} <= names
    assert not any(name.endswith(".bin") for name in names)
    assert not [p for p in converted["out"].parent.iterdir() if p.name.startswith(".")]  # no staging folder left


def test_check_is_recorded_under_1e_5_and_printed(converted):
    record = json.loads((converted["out"] / "conversion_check.json").read_text())
    assert record["passed"] and record["max_abs_difference"] < 1e-5
    assert set(record["per_output"]) == {"video_features", "video_embeds", "text_embeds", "text_to_video_cosine"}
    assert record["max_abs_difference"] == max(record["per_output"].values())
    assert record["input"]["videos"][1] > 1  # several frames: time attention is exercised
    assert f"{record['max_abs_difference']:.2e}" in converted["stdout"]


def test_output_loads_with_auto_classes_and_reproduces_the_golden_vectors(converted, reference_io):
    model = AutoModel.from_pretrained(converted["out"])
    assert isinstance(model, CMRCLIPModel)
    with torch.no_grad():
        video = model.get_video_features(pixel_values_videos=reference_io["pixel_values"]).pooler_output
        text = model.get_text_features(input_ids=reference_io["input_ids"],
                                       attention_mask=reference_io["attention_mask"]).pooler_output
    assert (video - reference_io["video_embeds"]).abs().max() < 1e-4
    assert (text - reference_io["text_embeds"]).abs().max() < 1e-4

    processor = AutoProcessor.from_pretrained(converted["out"])
    assert isinstance(processor, CMRCLIPProcessor)
    vocab = text_files()["vocab.txt"].decode().split("\n")
    assert processor.tokenizer("lv dilated")["input_ids"][1:-1] == [vocab.index("lv"), vocab.index("dilated")]
    studies = processor.feature_extractor
    layout = studies.layout
    assert layout["name"] == "reference" and layout["sampling"] == "segments" and layout["missing"] == "zeros"
    assert [(e["sequence"], e["view"], e["slices"], e["phases"], e["repeat_as_slices_of"])
            for e in layout["entries"]] == REFERENCE_COMPOSITION
    # The fixture's model is built for 8 frames at 32 px (its config): the reference composition at that size.
    assert (studies.num_frames, studies.image_size) == (8, 32)
    assert studies.resize_shortest_edge == studies.crop_size == round(256 * 32 / 224)
    assert studies.image_mean == pytest.approx(IMAGENET_MEAN) and studies.image_std == pytest.approx(IMAGENET_STD)


def test_a_release_sized_checkpoint_gets_exactly_the_reference_processing():
    """At the release's size (64 frames, 224 px, from full_size_keys.json) the processor is the spec's, unscaled."""
    shapes = json.loads((FIXTURE / "full_size_keys.json").read_text())
    frames, hidden = shapes["video_model.temporal_embed"][-2:]
    config = CMRCLIPConfig(vision_config=dict(image_size=224, patch_size=16, num_frames=frames, hidden_size=hidden,
                                              num_hidden_layers=1, num_attention_heads=12, intermediate_size=4 * hidden),
                           text_config=BertConfig(vocab_size=28996, num_hidden_layers=1), projection_dim=512)
    with torch.device("meta"):
        model = CMRCLIPModel(config)
    tokenizer = tiny_tokenizer()
    tokenizer.model_max_length = 10**6  # a tokenizer_config without a limit, as Bio_ClinicalBERT's
    studies = release_processor(model, tokenizer).feature_extractor
    assert studies.layout["name"] == "reference" and studies.num_frames == 64
    assert (studies.image_size, studies.resize_shortest_edge, studies.crop_size) == (224, 256, 256)
    assert tokenizer.model_max_length == 512  # the release cuts text at 512 tokens


def test_pipeline_scores_a_synthetic_dicom_study(converted, tmp_path):
    make_cohort(tmp_path / "cohort", 1, seed=11, progress=False, num_workers=1)
    study = str(next((tmp_path / "cohort" / "studies").iterdir()))
    classify = pipeline("zero-shot-cmr", model=str(converted["out"]))
    result = classify(study)
    findings = PromptSet.load(converted["out"]).findings
    assert {item["finding"] for item in result["findings"]} == set(findings)
    assert all(0.0 < item["score"] < 1.0 for item in result["findings"])
    labels = classify(study, candidate_labels=["normal", "hcm", "amyloidosis"])["labels"]
    assert sum(item["score"] for item in labels) == pytest.approx(1.0)
    meta = classify.feature_extractor(study)["study_metadata"][0]
    assert meta["layout"] == "reference" and meta["num_frames"] == 8
    assert {"cine/4ch", "cine/sax", "lge/sax"} <= {e["entry"] for e in meta["frames_used"]}


def test_output_passes_the_privacy_guard_and_push_dry_run_with_provenance(converted, hub, tmp_path, capsys):
    scan_folder(converted["out"])
    staged = tmp_path / "staged"
    assert cli.main(["push", str(converted["out"]), "--repo-id", "org/cmr-clip-release", "--dry-run", str(staged)]) == 0
    assert {"provenance.json", "conversion_check.json", "modeling_cmr_clip.py"} <= {p.name for p in staged.iterdir()}
    card = ModelCard.load(staged / "README.md")
    assert card.data.license == STATED_LICENSE
    for shown in (RELEASE_REPO, RELEASE_COMMIT, hub["bin_sha256"], hub["config_sha256"], STATED_LICENSE,
                  "Nature Communications", "conversion check", TEXT_REPO):
        assert shown in card.content, shown
    for path in list(converted["out"].iterdir()) + list(staged.iterdir()):
        if path.suffix in (".json", ".md", ".txt"):
            assert str(hub["root"]) not in path.read_text() and hub["root"].name not in path.read_text(), path.name


def test_local_folder_source_records_no_path_and_an_unstated_licence(hub, tmp_path):
    files = release_files(fixture_state())
    files.pop("README.md")
    source = write_folder(tmp_path / "patient-named-export", files)
    tokenizer = write_folder(tmp_path / "bio_clinicalbert", text_files())
    out = tmp_path / "out"
    assert cli.main(["convert-original", str(source), "--out", str(out), "--tokenizer", str(tokenizer)]) == 0
    provenance = (out / "provenance.json").read_text()
    assert "patient-named-export" not in provenance and str(tmp_path) not in provenance
    record = json.loads(provenance)
    assert record["source"]["kind"] == "local folder" and record["source"]["checkpoint_sha256"] == hub["bin_sha256"]
    assert record["license"]["stated"] is None
    card = ModelCard.load(out / "README.md")
    assert card.data.license == "unknown" and "not stated by the source" in card.content


@pytest.mark.parametrize("plant, key", [
    ("shape", "video_model.blocks.1.mlp.fc2.weight"),
    ("rename", "video_model.blocks.0.timeattn.proj.weight"),
])
def test_a_planted_checkpoint_is_refused_naming_the_key_and_nothing_is_written(tmp_path, capsys, plant, key):
    state = fixture_state()
    if plant == "shape":
        state[key] = state[key].T.contiguous()
        expected = [f"{key}: checkpoint {tuple(state[key].shape)} vs model {tuple(state[key].T.shape)}"]
    else:
        state[key.replace(".proj.", ".projection.")] = state.pop(key)
        expected = [f"missing (1): {key}", f"unexpected (1): {key.replace('.proj.', '.projection.')}"]
    source = write_folder(tmp_path / "release", release_files(state))
    tokenizer = write_folder(tmp_path / "text", text_files())
    out = tmp_path / "out"
    assert cli.main(["convert-original", str(source), "--out", str(out), "--tokenizer", str(tokenizer)]) == 2
    message = capsys.readouterr().err
    assert "cmr-clip convert-original: CheckpointMismatchError: " in message
    for text in expected:
        assert text in message
    assert str(tmp_path) not in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["release", "text"]  # no output, no staging folder


def test_a_failing_check_writes_nothing(tmp_path, monkeypatch, capsys):
    """A conversion that loads but computes something else (one bias element off by 1e-2; a shift of the whole bias
    would vanish in the next LayerNorm) is refused by the check."""
    import cmr_clip.release

    real = cmr_clip.release.convert_state

    def off_by_a_little(*args, **kwargs):
        model = real(*args, **kwargs)
        with torch.no_grad():
            model.vision_model.encoder.layers[0].time_attn.out_proj.bias[0] += 1e-2
        return model

    monkeypatch.setattr(cmr_clip.release, "convert_state", off_by_a_little)
    source = write_folder(tmp_path / "release", release_files(fixture_state()))
    tokenizer = write_folder(tmp_path / "text", text_files())
    assert cli.main(["convert-original", str(source), "--out", str(tmp_path / "out"), "--tokenizer", str(tokenizer)]) == 2
    assert "differs from the source weights" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["release", "text"]


def test_a_revision_the_hub_cannot_give_is_reported_by_repo_id(hub, tmp_path):
    result = run_offline(hub, RELEASE_REPO, "--revision", "v2", "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert "could not fetch 'makiyeah/CMRCLIP' at revision 'v2'" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_an_occupied_output_folder_is_refused_before_any_work(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    source = write_folder(tmp_path / "release", release_files(fixture_state()))
    assert cli.main(["convert-original", str(source), "--out", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err and sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def test_reference_forward_reproduces_the_golden_vectors(reference_io):
    """The check's independent path is itself right: the authors' outputs from the raw fixture weights."""
    state = fixture_state()
    video = reference_video_features(state, reference_io["pixel_values"].double(), num_heads=2)
    text = reference_text_features(state, reference_io["input_ids"], reference_io["attention_mask"], num_heads=2)
    video_embeds, text_embeds = reference_project(state, video, text)
    cosine = torch.nn.functional.normalize(text_embeds, dim=-1) @ torch.nn.functional.normalize(video_embeds, dim=-1).T
    for name, value in {"video_features": video, "video_embeds": video_embeds, "text_embeds": text_embeds,
                        "text_to_video_cosine": cosine}.items():
        assert (value.float() - reference_io[name]).abs().max() < 1e-5, name


def test_check_catches_a_swapped_attention_branch():
    """Space and time attention swapped (a plausible renaming slip) passes the shape check but not the check."""
    state = load_original_state_dict(FIXTURE / "reference_state_dict.safetensors")
    model = convert(FIXTURE / "reference_state_dict.safetensors", FIXTURE / "reference_config.json")
    assert conversion_check(model, state)["passed"]
    layer = model.vision_model.encoder.layers[1]
    with torch.no_grad():
        space, time = layer.space_attn.qkv.weight.clone(), layer.time_attn.qkv.weight.clone()
        layer.space_attn.qkv.weight.copy_(time)
        layer.time_attn.qkv.weight.copy_(space)
    record = conversion_check(model, state)
    assert not record["passed"] and record["per_output"]["video_features"] > record["tolerance"]
    assert record["per_output"]["text_embeds"] < 1e-5  # the text tower is untouched


@pytest.mark.slow
def test_a_release_sized_checkpoint_converts_and_passes_the_check(tmp_path, capsys):
    """Random weights at the release's shapes (full_size_keys.json: ViT-B/16, 64 frames, BERT-base cased, 512-d
    projections) and its config (dimensions by architecture name only): the command converts them, the float32
    model agrees with the float64 recomputation within the tolerance, and the processor is the spec's."""
    shapes = json.loads((FIXTURE / "full_size_keys.json").read_text())
    generator = torch.Generator().manual_seed(0)
    state = {}
    for key, shape in shapes.items():
        if key.endswith("position_ids"):
            state[key] = torch.arange(shape[-1]).reshape(shape)
        else:
            offset = 1.0 if "norm" in key.lower() and key.endswith("weight") else 0.0
            state[key] = offset + 0.02 * torch.randn(shape, generator=generator)
    config = {"video_params": {"model": "SpaceTimeTransformer", "arch_config": "base_patch16_224", "num_frames": 64,
                               "pretrained": True, "time_init": "zeros"},
              "text_params": {"model": TEXT_REPO, "pretrained": True, "input": "text"},
              "projection_dim": 512, "projection": "minimal", "load_checkpoint": ""}
    source = tmp_path / "release"
    source.mkdir()
    torch.save({f"module.{k}": v for k, v in state.items()}, source / "pytorch_model.bin")
    (source / "config.json").write_text(json.dumps(config))
    vocab = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab += [f"w{i}" for i in range(28996 - len(vocab))]
    text = write_folder(tmp_path / "text", {"vocab.txt": ("\n".join(vocab) + "\n").encode(),
                                            "config.json": BertConfig(vocab_size=28996).to_json_string().encode()})
    out = tmp_path / "out"
    assert cli.main(["convert-original", str(source), "--out", str(out), "--tokenizer", str(text)]) == 0
    record = json.loads((out / "conversion_check.json").read_text())
    print(capsys.readouterr().out, record["per_output"])
    assert record["passed"] and record["input"]["videos"] == [2, 8, 3, 224, 224]
    studies = AutoProcessor.from_pretrained(out).feature_extractor
    assert (studies.num_frames, studies.image_size, studies.resize_shortest_edge) == (64, 224, 256)
