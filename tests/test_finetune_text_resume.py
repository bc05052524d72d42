"""Fine-tuning, continued: prompt adaptation of the text tower through the CLI (only text-tower LoRA weights
change), resume from a checkpoint to the same weights as an uninterrupted run, and the Auto class."""

import json

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForVideoClassification, AutoTokenizer

from cmr_clip import CMRCLIPForStudyClassification, CMRCLIPModel
from cmr_clip.cli import main as cli_main
from cmr_clip.training import TEXT_LORA_TARGETS, FinetuneConfig, finetune, load_finetuned
from cmr_clip.training import loop as training_loop
from cmr_clip.training.tasks.prompt_tuning import PromptAdaptationError, PromptClassifier
from test_finetune import clip_dir, labelled, video_batch  # noqa: F401 (fixtures)

torch.set_num_threads(2)

PROMPTS = {"name": "test", "findings": {
    "bright": {"positive": ["severe enhancement ."], "negative": ["no enhancement ."]},
    "dark": {"positive": ["reduced ejection fraction ."], "negative": ["normal ejection fraction ."]},
}}


@pytest.fixture(scope="module")
def text_model_dir(labelled, tmp_path_factory):
    """The labelled corpus's tiny model with the corpus's tokenizer next to it, and a prompt set file."""
    corpus, model = labelled
    root = tmp_path_factory.mktemp("text")
    clip = CMRCLIPModel.from_pretrained(model)
    clip.save_pretrained(root / "model")
    AutoTokenizer.from_pretrained(corpus / "tokenizer").save_pretrained(root / "model")
    (root / "prompts.json").write_text(json.dumps(PROMPTS))
    return root / "model", root / "prompts.json"


def test_cli_text_tower_lora_changes_only_text_lora_weights(labelled, text_model_dir, tmp_path, capsys):
    corpus, _ = labelled
    model_dir, prompts = text_model_dir
    assert cli_main(["finetune", "--model", str(model_dir), "--data", str(corpus), "--output", str(tmp_path),
                     "--labels", "bright", "dark", "--tower", "text", "--prompt-set", str(prompts), "--lora",
                     "--lora-r", "4", "--epochs", "2", "--batch-size", "4", "--learning-rate", "1e-2",
                     "--no-augment", "--no-progress"]) == 0
    assert "trainable parameters:" in capsys.readouterr().out
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["tower"] == "text" and metrics["trainable_parameters"] < 0.2 * metrics["total_parameters"]
    assert set(metrics["evaluation"]["test"]["per_label"]) == {"bright", "dark"}
    adapter = load_file(tmp_path / "adapter_model.safetensors")
    assert adapter and all("text_model" in k and "lora_" in k for k in adapter)
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in adapter.items())  # B starts at zero: it learnt
    assert set(json.loads((tmp_path / "adapter_config.json").read_text())["target_modules"]) == set(TEXT_LORA_TARGETS)

    model = load_finetuned(tmp_path)
    assert isinstance(model, PromptClassifier) and isinstance(model.clip, PeftModel)
    videos = video_batch(model.base_clip.config, n=4)
    with torch.no_grad():
        logits = model(pixel_values_videos=videos).logits
        merged = load_finetuned(tmp_path, merge=True)
        torch.testing.assert_close(merged(pixel_values_videos=videos).logits, logits, rtol=1e-5, atol=1e-5)
    # Merged into the base model, the adapter has moved text-tower weights only.
    base = CMRCLIPModel.from_pretrained(model_dir).state_dict()
    changed = {k for k, v in merged.clip.state_dict().items() if not torch.equal(v, base[k])}
    assert changed and all(k.startswith("text_model.") for k in changed)


def test_text_tower_single_label_uses_class_prompts_and_regression_is_refused(labelled, text_model_dir, tmp_path):
    corpus, _ = labelled
    model_dir, prompts = text_model_dir
    single = finetune(FinetuneConfig(model_dir=str(model_dir), data_dir=str(corpus), labels=["diagnosis"],
                                     output_dir=str(tmp_path / "single"), tower="text", prompt_set=str(prompts),
                                     max_steps=2, batch_size=4, progress=False))
    assert single["problem_type"] == "single_label_classification"
    saved = json.loads((tmp_path / "single" / "label_prompts.json").read_text())
    assert saved["prompt_groups"] == [["bright."], ["dim."]]
    # Full text-tower fine-tune: the whole CMR-CLIP model is saved, its video tower untouched.
    tuned = CMRCLIPModel.from_pretrained(tmp_path / "single").state_dict()
    base = CMRCLIPModel.from_pretrained(model_dir).state_dict()
    assert all(torch.equal(tuned[k], v) for k, v in base.items() if not k.startswith(("text_model.", "text_projection.")))
    with pytest.raises(PromptAdaptationError, match="video tower"):
        finetune(FinetuneConfig(model_dir=str(model_dir), data_dir=str(corpus), labels=["lvef"],
                                output_dir=str(tmp_path / "reg"), tower="text", max_steps=1, progress=False))


class Interrupted(Exception):
    pass


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(labelled, tmp_path, monkeypatch):
    corpus, model = labelled

    def run(out, **overrides):
        return finetune(FinetuneConfig(model_dir=str(model), data_dir=str(corpus), labels=["bright", "dark"],
                                       output_dir=str(out), lora=True, lora_r=4, lora_dropout=0.2, epochs=3,
                                       batch_size=4, checkpoint_every=3, progress=False, **overrides))

    reference = run(tmp_path / "reference")
    save_checkpoint = training_loop.save_checkpoint

    def save_then_die(accelerator, config, state):
        path = save_checkpoint(accelerator, config, state)
        if state["global_step"] == 6:  # mid-way through the second epoch (4 batches per epoch)
            raise Interrupted
        return path

    monkeypatch.setattr(training_loop, "save_checkpoint", save_then_die)
    with pytest.raises(Interrupted):
        run(tmp_path / "interrupted")
    assert not (tmp_path / "interrupted" / "adapter_model.safetensors").exists()
    saved_at = []

    def save_and_record(accelerator, config, state):
        saved_at.append(state["global_step"])
        return save_checkpoint(accelerator, config, state)

    monkeypatch.setattr(training_loop, "save_checkpoint", save_and_record)
    resumed = run(tmp_path / "interrupted", resume="latest")
    assert saved_at[0] > 6  # it went on from the checkpoint, not from the start

    expected = load_file(tmp_path / "reference" / "adapter_model.safetensors")
    got = load_file(tmp_path / "interrupted" / "adapter_model.safetensors")
    assert expected.keys() == got.keys()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=1e-5, atol=1e-6, msg=key)
    assert len(resumed["history"]) == len(reference["history"])
    for got_epoch, expected_epoch in zip(resumed["history"], reference["history"]):
        assert got_epoch == pytest.approx(expected_epoch)  # approx takes one flat dict at a time


def test_auto_model_for_video_classification_gives_the_study_classifier(clip_dir, tmp_path):
    model = AutoModelForVideoClassification.from_pretrained(clip_dir, num_labels=2,
                                                            problem_type="multi_label_classification")
    assert isinstance(model, CMRCLIPForStudyClassification)
    model.save_pretrained(tmp_path)
    again = AutoModelForVideoClassification.from_pretrained(tmp_path).eval()
    assert isinstance(again, CMRCLIPForStudyClassification) and again.config.problem_type == "multi_label_classification"
    videos = video_batch(model.config)
    with torch.no_grad():
        torch.testing.assert_close(again(pixel_values_videos=videos).logits, model.eval()(pixel_values_videos=videos).logits)


def test_head_init_probe_fits_the_head_on_frozen_embeddings_first(labelled, tmp_path):
    corpus, model = labelled

    def run(head_init):
        return finetune(FinetuneConfig(model_dir=str(model), data_dir=str(corpus), labels=["bright", "dark"],
                                       output_dir=str(tmp_path / head_init), lora=True, lora_r=4, max_steps=1,
                                       learning_rate=1e-9, batch_size=16, augment=False, head_init=head_init,
                                       progress=False))

    fresh, probed = run("fresh"), run("probe")
    assert fresh["head_probe_loss"] is None
    # With a learning rate of ~0 the fine-tune itself changes nothing: the probed head alone fits better.
    assert probed["history"][0]["train_loss"] < fresh["history"][0]["train_loss"]
    with pytest.raises(Exception, match="head_init"):
        finetune(FinetuneConfig(model_dir=str(model), data_dir=str(corpus), labels=["bright"], tower="text",
                                head_init="probe", output_dir=str(tmp_path / "text")))
