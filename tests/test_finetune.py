"""Fine-tuning: the study classifier loads a CMR-CLIP checkpoint with a fresh head, LoRA trains only adapters
and head, adapters round-trip and merge exactly, the CLI runs full and LoRA fine-tunes with per-label
metrics, and LoRA on the text tower adapts prompts without touching the video tower."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import load_from_disk
from peft import PeftModel
from safetensors.torch import load_file

from cmr_clip import CMRCLIPForStudyClassification, CMRCLIPModel
from cmr_clip.cli import main as cli_main
from cmr_clip.evaluation.classification import best_f1_threshold, classification_metrics
from cmr_clip.training import (
    TEXT_LORA_TARGETS,
    VIDEO_LORA_TARGETS,
    FinetuneConfig,
    FinetuneError,
    apply_lora,
    finetune,
    load_finetuned,
    trainable_fraction,
)
from cmr_clip.training.tasks.classification import imbalance_weights, parse_labels
from test_modeling_cmr_clip import tiny_config
from test_training import make_corpus

torch.set_num_threads(2)


def video_batch(config, n=3, seed=0):
    v = config.vision_config
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, v.num_frames, 3, v.image_size, v.image_size, generator=generator)


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    """A tiny random CMR-CLIP saved with save_pretrained."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("clip")
    CMRCLIPModel(tiny_config()).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """A tiny corpus whose `labels` follow the studies' brightness (a learnable finding), with a tiny model
    that matches its frame count and size."""
    root = tmp_path_factory.mktemp("labelled")
    raw = make_corpus(root / "raw", n_train=16, n_val=8)
    corpus = load_from_disk(str(raw))

    def add_labels(row):
        brightness = float(np.asarray(row["frames"], dtype=float).mean())
        return {"labels": json.dumps({"bright": brightness > 110, "dark": brightness < 80,
                                      "diagnosis": "bright" if brightness > 110 else "dim",
                                      "lvef": brightness / 3})}

    corpus = corpus.map(add_labels)
    corpus["test"] = corpus["validation"]
    path = root / "corpus"
    corpus.save_to_disk(str(path))
    for sub in ("tokenizer", "study_processor"):
        shutil.copytree(raw / sub, path / sub)
    torch.manual_seed(0)
    model = CMRCLIPModel(tiny_config(vision=dict(num_frames=4), max_text_length=16))
    model.save_pretrained(root / "model")
    return path, root / "model"


def test_classifier_loads_video_tower_from_a_cmr_clip_dir_with_a_fresh_head(clip_dir):
    clip = CMRCLIPModel.from_pretrained(clip_dir)
    model = CMRCLIPForStudyClassification.from_pretrained(
        clip_dir, num_labels=3, problem_type="multi_label_classification", id2label={0: "a", 1: "b", 2: "c"})
    for name, tensor in clip.state_dict().items():
        if name.startswith(("vision_model.", "visual_projection.")):
            assert torch.equal(model.state_dict()[name], tensor), name
    assert not any(n.startswith(("text_model", "text_projection")) for n in model.state_dict())
    assert model.config.id2label == {0: "a", 1: "b", 2: "c"} and model.config.label2id["c"] == 2
    # The head is freshly initialised (small, not uninitialised memory).
    assert 0 < model.classifier.weight.std() < 0.1
    videos = video_batch(model.config)
    labels = torch.tensor([[1.0, 0, 1], [0, 0, 0], [1, 1, 1]])
    out = model(pixel_values_videos=videos, labels=labels)
    with torch.no_grad():
        embeds = clip.get_video_features(pixel_values_videos=videos).pooler_output
    torch.testing.assert_close(out.study_embeds, embeds)
    torch.testing.assert_close(out.loss, torch.nn.functional.binary_cross_entropy_with_logits(out.logits, labels))


@pytest.mark.parametrize("problem_type,labels,loss_fn", [
    ("single_label_classification", torch.tensor([0, 2, 1]),
     lambda logits, y: torch.nn.functional.cross_entropy(logits, y, weight=torch.tensor([0.5, 1.0, 2.0]))),
    ("regression", torch.tensor([[55.0], [30.0], [62.0]]), lambda logits, y: torch.nn.functional.mse_loss(logits, y)),
])
def test_single_label_and_regression_losses(clip_dir, problem_type, labels, loss_fn):
    num_labels = 1 if problem_type == "regression" else 3
    weights = [0.5, 1.0, 2.0] if problem_type != "regression" else None
    model = CMRCLIPForStudyClassification.from_pretrained(
        clip_dir, num_labels=num_labels, problem_type=problem_type, label_weights=weights, classifier_hidden_size=8)
    out = model(pixel_values_videos=video_batch(model.config), labels=labels)
    assert out.logits.shape == (3, num_labels)
    torch.testing.assert_close(out.loss, loss_fn(out.logits, labels.float() if num_labels == 1 else labels))


def lora_classifier(clip_dir, seed=0):
    torch.manual_seed(seed)
    base = CMRCLIPForStudyClassification.from_pretrained(clip_dir, num_labels=2,
                                                         problem_type="multi_label_classification")
    return apply_lora(base, r=4, alpha=8, dropout=0.0, targets=VIDEO_LORA_TARGETS, modules_to_save=["classifier"])


def test_lora_trains_only_adapters_and_head(clip_dir):
    model = lora_classifier(clip_dir)
    trainable, total = trainable_fraction(model)
    print(f"trainable {trainable} of {total} ({100 * trainable / total:.1f}%)")
    assert trainable < 0.2 * total
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for _ in range(2):
        loss = model(pixel_values_videos=video_batch(model.config), labels=torch.tensor([[1.0, 0], [0, 1], [1, 1]])).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    adapters = {n for n in changed if "lora_" in n}
    heads = {n for n in changed if "classifier" in n}
    assert changed == adapters | heads
    # Every targeted layer's adapter moved (B starts at zero, so B must have learnt), and the head did.
    for target in VIDEO_LORA_TARGETS:
        assert any(f".{target}.lora_B" in n for n in adapters), target
    assert any("modules_to_save" in n for n in heads)


def test_adapter_round_trip_and_merge_give_the_same_logits(clip_dir, tmp_path):
    model = lora_classifier(clip_dir)
    with torch.no_grad():  # make the adapters non-trivial
        for name, param in model.named_parameters():
            if "lora_B" in name or "modules_to_save" in name:
                param.add_(0.05 * torch.randn_like(param))
    model.eval()
    videos = video_batch(model.config, seed=1)
    with torch.no_grad():
        expected = model(pixel_values_videos=videos).logits
    model.save_pretrained(tmp_path)
    adapter_bytes = (tmp_path / "adapter_model.safetensors").stat().st_size
    full_bytes = sum(t.numel() * t.element_size() for t in model.get_base_model().state_dict().values())
    assert adapter_bytes < 0.25 * full_bytes
    assert all("lora_" in k or "classifier" in k for k in load_file(tmp_path / "adapter_model.safetensors"))

    fresh = CMRCLIPForStudyClassification.from_pretrained(clip_dir, num_labels=2,
                                                          problem_type="multi_label_classification")
    loaded = PeftModel.from_pretrained(fresh, tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixel_values_videos=videos).logits, expected, rtol=0, atol=0)
        merged = loaded.merge_and_unload()
        assert isinstance(merged, CMRCLIPForStudyClassification)
        assert not any("lora_" in n for n, _ in merged.named_parameters())
        torch.testing.assert_close(merged(pixel_values_videos=videos).logits, expected, rtol=1e-5, atol=1e-5)


def run_cli(labelled, out, *extra):
    corpus, model = labelled
    return cli_main(["finetune", "--model", str(model), "--data", str(corpus), "--output", str(out),
                     "--epochs", "3", "--batch-size", "4", "--learning-rate", "3e-3", "--no-augment",
                     "--no-progress", *extra])


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_cli_full_and_lora_fine_tunes_write_model_and_per_label_metrics(labelled, tmp_path, mode, capsys):
    extra = ["--lora", "--lora-r", "4", "--lora-targets", "qkv", "fc2"] if mode == "lora" else []
    # float32, as the recomputation below ("auto" trains and evaluates in bf16 on a CPU with native bf16).
    assert run_cli(labelled, tmp_path, "--labels", "bright", "dark", "--mixed-precision", "no", *extra) == 0
    assert "trainable parameters:" in capsys.readouterr().out
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["problem_type"] == "multi_label_classification"
    for split in ("validation", "test"):
        for name in ("bright", "dark"):
            record = metrics["evaluation"][split]["per_label"][name]
            assert {"auc", "f1", "threshold", "validation_auc"} <= set(record)
    if mode == "lora":
        assert (tmp_path / "adapter_model.safetensors").is_file() and not (tmp_path / "model.safetensors").exists()
        assert metrics["trainable_parameters"] < 0.3 * metrics["total_parameters"]
        adapter = json.loads((tmp_path / "adapter_config.json").read_text())
        assert set(adapter["target_modules"]) == {"qkv", "fc2"} and adapter["r"] == 4
    else:
        assert (tmp_path / "model.safetensors").is_file()
        assert metrics["trainable_parameters"] == metrics["total_parameters"]
    model = load_finetuned(tmp_path).eval()
    assert model.config.id2label == {0: "bright", 1: "dark"}
    # The reloaded model reproduces the saved run's validation predictions: its F1 at the saved threshold.
    from cmr_clip.data.collate import StudyCollator
    from cmr_clip.data.corpus import load_study_processor
    from cmr_clip.data.dataset import LabelledStudies
    from cmr_clip.training.tasks.classification import split_targets
    corpus = load_from_disk(str(labelled[0]))
    targets = split_targets(corpus["validation"], "multi_label_classification", ["bright", "dark"], ["bright", "dark"])
    studies = LabelledStudies(corpus["validation"], targets, False, 0, None)
    batch = StudyCollator(load_study_processor(str(labelled[0])))([studies[i] for i in range(len(studies))])
    with torch.no_grad():
        scores = model(pixel_values_videos=batch["pixel_values_videos"]).logits.sigmoid().numpy()
    recomputed = classification_metrics("multi_label_classification", ["bright", "dark"], scores, targets, scores, targets)
    for name in ("bright", "dark"):
        saved = metrics["evaluation"]["validation"]["per_label"][name]
        assert recomputed["per_label"][name]["auc"] == pytest.approx(saved["auc"], abs=1e-6)


def test_single_label_with_balanced_sampler_and_regression_run(labelled, tmp_path):
    corpus, model = labelled
    single = finetune(FinetuneConfig(model_dir=str(model), data_dir=str(corpus), labels=["diagnosis"],
                                     output_dir=str(tmp_path / "single"), balance="sampler", max_steps=2,
                                     batch_size=4, progress=False, lora=True))
    assert single["problem_type"] == "single_label_classification"
    assert set(single["evaluation"]["test"]["per_label"]) == {"bright", "dim"}
    assert 0 <= single["evaluation"]["test"]["accuracy"] <= 1
    regression = finetune(FinetuneConfig(model_dir=str(model), data_dir=str(corpus), labels=["lvef"],
                                         output_dir=str(tmp_path / "reg"), max_steps=2, batch_size=4, progress=False))
    assert regression["problem_type"] == "regression" and "mae" in regression["evaluation"]["test"]


def test_fine_tuning_in_bf16_on_cpu(labelled, tmp_path):
    corpus, model = labelled
    common = dict(model_dir=str(model), data_dir=str(corpus), labels=["bright", "dark"], epochs=3, batch_size=4,
                  learning_rate=3e-3, augment=False, progress=False)
    fp32 = finetune(FinetuneConfig(output_dir=str(tmp_path / "fp32"), mixed_precision="no", **common))
    bf16 = finetune(FinetuneConfig(output_dir=str(tmp_path / "bf16"), mixed_precision="bf16", **common))
    losses = [record["train_loss"] for record in bf16["history"]]
    assert losses[-1] < losses[0]
    assert losses[0] != fp32["history"][0]["train_loss"]
    assert losses[0] == pytest.approx(fp32["history"][0]["train_loss"], rel=0.05)


def test_imbalance_weights_follow_class_frequencies():
    problem, targets, names = parse_labels(
        [json.dumps({"a": i < 2, "b": i < 6, "dx": "x" if i < 6 else "y"}) for i in range(8)], ["a", "b"])
    assert problem == "multi_label_classification" and names == ["a", "b"]
    assert imbalance_weights(problem, targets, 2) == pytest.approx([6 / 2, 2 / 6])
    problem, targets, classes = parse_labels(
        [json.dumps({"dx": "x" if i < 6 else "y"}) for i in range(8)], ["dx"])
    assert problem == "single_label_classification" and classes == ["x", "y"]
    weights = imbalance_weights(problem, targets, 2)
    assert weights[1] == pytest.approx(3 * weights[0]) and np.mean(weights) == pytest.approx(1.0)


def test_threshold_is_the_best_f1_on_validation():
    scores = np.array([0.1, 0.2, 0.35, 0.4, 0.8, 0.9])
    truth = np.array([0, 0, 0, 1, 1, 1])
    assert best_f1_threshold(scores, truth) == pytest.approx(0.4)
    metrics = classification_metrics("multi_label_classification", ["f"], scores[:, None], truth[:, None],
                                     np.array([[0.3], [0.5]]), np.array([[0], [1]]))
    assert metrics["per_label"]["f"]["f1"] == 1.0 and metrics["per_label"]["f"]["auc"] == 1.0


def test_bad_labels_and_lora_targets_are_clear_errors(labelled, clip_dir, tmp_path):
    corpus, model = labelled
    with pytest.raises(FinetuneError, match="not in the corpus's labels"):
        finetune(FinetuneConfig(model_dir=str(model), data_dir=str(corpus), labels=["lv_hypertrophy"],
                                output_dir=str(tmp_path)))
    classifier = CMRCLIPForStudyClassification.from_pretrained(clip_dir, num_labels=1)
    with pytest.raises(FinetuneError, match="name no Linear layer"):
        apply_lora(classifier, 4, 8, 0.0, ["query"])


def test_text_tower_lora_adapts_prompts_and_leaves_the_video_tower(clip_dir):
    torch.manual_seed(0)
    model = apply_lora(CMRCLIPModel.from_pretrained(clip_dir), r=4, alpha=8, dropout=0.0, targets=TEXT_LORA_TARGETS)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("text_model" in n and "lora_" in n for n in trainable)
    videos = video_batch(model.config, n=4)
    input_ids = torch.randint(5, 60, (4, 8), generator=torch.Generator().manual_seed(0))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.no_grad():
        video_before = model(input_ids=input_ids, pixel_values_videos=videos).video_embeds
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    first = None
    for _ in range(5):
        loss = model(input_ids=input_ids, pixel_values_videos=videos, return_loss=True).loss
        first = first if first is not None else loss.item()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    assert loss.item() < first
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all("text_model" in n and "lora_" in n for n in changed)
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=input_ids, pixel_values_videos=videos).video_embeds, video_before)


def test_example_finetune_lora_saves_an_adapter_and_predicts(labelled, tmp_path, capsys):
    import importlib.util

    corpus, model = labelled
    script = Path(__file__).resolve().parents[1] / "examples" / "finetune_lora.py"
    spec = importlib.util.spec_from_file_location("finetune_lora", script)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    result = example.main([str(model), str(corpus), str(tmp_path), "--labels", "bright", "dark", "--epochs", "1",
                           "--lora-r", "4"])
    assert set(result["prediction"]) == {"bright", "dark"}
    assert all(0 <= p <= 1 for p in result["prediction"].values())
    assert result["merge_difference"] < 1e-5
    assert result["adapter_bytes"] == (tmp_path / "adapter_model.safetensors").stat().st_size
    assert "trainable parameters:" in capsys.readouterr().out
