"""Training with Accelerate: resume after a kill gives the same weights, the gathered loss across two
processes equals the single-process loss, and the pieces the loop relies on behave."""

import json
import math
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Array2D, Array3D, Dataset, DatasetDict, Features, Value
from safetensors.torch import load_file
from transformers import BertTokenizer

from cmr_clip import CMRCLIPModel
from cmr_clip.data.augment import Augmentation, choose_frames, example_rng
from cmr_clip.data.dataset import EpochShuffleSampler, StudyTextDataset
from cmr_clip.training import FinetuneConfig, TrainConfig, train
from cmr_clip.training.checkpointing import latest_checkpoint
from cmr_clip.training.loop import parameter_groups

ROOT = Path(__file__).resolve().parents[1]
WORDS = ["normal", "lv", "rv", "dilated", "reduced", "ejection", "fraction", "no", "late", "enhancement", "severe",
         "mild", "hypertrophy", "septal", "pericardial", "effusion", "aortic", "root", "."]


def write_tokenizer(path: Path) -> BertTokenizer:
    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS])}
    tokenizer = BertTokenizer(vocab=vocab, do_lower_case=True)
    tokenizer.save_pretrained(path)
    return tokenizer


def make_corpus(path: Path, n_train=12, n_val=6, frames=4, size=16, timeline=6, seed=0) -> Path:
    """A tiny prepared corpus where each study's brightness pattern matches words of its impression."""
    rng = np.random.default_rng(seed)
    features = Features({
        "study_id": Value("string"),
        "frames": Array3D(shape=(None, size, size), dtype="uint8"),
        "slots": Array2D(shape=(frames, 2), dtype="int32"),
        "impression": Value("string"),
    })
    splits = {}
    for name, n in (("train", n_train), ("validation", n_val)):
        rows = {"study_id": [], "frames": [], "slots": [], "impression": []}
        for i in range(n):
            words = rng.choice(WORDS[:-1], size=3, replace=False)
            level = 40 + 50 * (WORDS.index(words[0]) % 4)
            rows["study_id"].append(f"{name}{i:03d}")
            rows["frames"].append(rng.integers(level - 30, level + 30, (timeline, size, size)).astype(np.uint8))
            bounds = np.linspace(0, timeline, frames + 1).astype(int)
            rows["slots"].append(np.stack([bounds[:-1], bounds[1:]], 1).astype(np.int32))
            rows["impression"].append(" ".join(words) + " .")
        splits[name] = Dataset.from_dict(rows, features=features)
    DatasetDict(splits).save_to_disk(str(path))
    write_tokenizer(path / "tokenizer")
    from cmr_clip.processing import CMRStudyProcessor

    CMRStudyProcessor(num_frames=7, image_size=size).save_pretrained(path / "study_processor")
    return path


def tiny_train_config(corpus: Path, out: Path, **overrides) -> TrainConfig:
    fields = dict(
        data_dir=str(corpus), output_dir=str(out), batch_size=4, eval_batch_size=8, epochs=2,
        learning_rate=1e-3, warmup_ratio=0.2, projection_dim=16, progress=False, max_text_length=16,
        vision=dict(patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64),
        text=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64),
    )
    fields.update(overrides)
    return TrainConfig(**fields)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("corpus"))


def test_training_saves_a_loadable_model_processor_and_metrics(corpus, tmp_path):
    from cmr_clip.processing import CMRCLIPProcessor

    metrics = train(tiny_train_config(corpus, tmp_path))
    assert [r["epoch"] for r in metrics["history"]] == [1, 2]
    assert {"text_to_study_R@5", "study_to_text_median_rank"} <= set(metrics["history"][-1])
    model = CMRCLIPModel.from_pretrained(tmp_path)
    assert model.config.vision_config.num_frames == 4 and model.config.vision_config.image_size == 16
    processor = CMRCLIPProcessor.from_pretrained(tmp_path)
    assert processor.tokenizer("no late enhancement")["input_ids"][1] != processor.tokenizer.unk_token_id
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["history"] == metrics["history"]


def test_resume_after_kill_gives_the_same_weights(corpus, tmp_path):
    steps = 30
    reference = tmp_path / "uninterrupted"
    train(tiny_train_config(corpus, reference, max_steps=steps, checkpoint_every=2))

    interrupted = tmp_path / "interrupted"
    config = tiny_train_config(corpus, interrupted, max_steps=steps, checkpoint_every=2)
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(config.to_dict()))
    process = subprocess.Popen([sys.executable, "-m", "cmr_clip.training", "--config", str(config_file)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    deadline = time.time() + 300
    while latest_checkpoint(str(interrupted)) is None and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, process.stderr.read().decode()[-2000:]
    killed_at = json.loads((latest_checkpoint(str(interrupted)) / "trainer_state.json").read_text())["global_step"]
    assert 0 < killed_at < steps
    assert not (interrupted / "model.safetensors").exists()

    train(tiny_train_config(corpus, interrupted, max_steps=steps, checkpoint_every=2, resume="latest"))
    expected, resumed = load_file(str(reference / "model.safetensors")), load_file(str(interrupted / "model.safetensors"))
    assert expected.keys() == resumed.keys()
    for key in expected:
        torch.testing.assert_close(resumed[key], expected[key], atol=1e-5, rtol=1e-4, msg=key)
    history = json.loads((interrupted / "metrics.json").read_text())["history"]
    # The killed run computed its steps in another process, whose thread count may differ: the same losses up to
    # float32 rounding of reductions, not bit for bit.
    for got, want in zip(history, json.loads((reference / "metrics.json").read_text())["history"], strict=True):
        assert got == pytest.approx(want, rel=1e-6)


def wait_for_mid_epoch_checkpoint(process, output_dir, timeout: float = 300.0) -> None:
    """Poll until the run in `process` has written a checkpoint in the middle of an epoch (or has ended)."""
    deadline = time.time() + timeout
    while process.poll() is None and time.time() < deadline:
        checkpoint = latest_checkpoint(str(output_dir))
        if checkpoint is not None and json.loads((checkpoint / "trainer_state.json").read_text())["batches_in_epoch"]:
            return
        time.sleep(0.02)


def test_gradient_checkpointing_run_matches(corpus, tmp_path):
    plain = train(tiny_train_config(corpus, tmp_path / "a", max_steps=3, augment=False))
    checkpointed = train(tiny_train_config(corpus, tmp_path / "b", max_steps=3, augment=False, gradient_checkpointing=True))
    assert plain["history"][-1]["train_loss"] == pytest.approx(checkpointed["history"][-1]["train_loss"], rel=1e-4)


def test_onednn_linear_training_matches_torch_and_says_how_many_layers(corpus, tmp_path):
    from cmr_clip.precision import onednn_linear_pays

    plain = train(tiny_train_config(corpus, tmp_path / "a", max_steps=3, augment=False, mixed_precision="no"))
    routed = train(tiny_train_config(corpus, tmp_path / "b", max_steps=3, augment=False, mixed_precision="no",
                                     onednn_linear=True))
    assert routed["history"][-1]["train_loss"] == pytest.approx(plain["history"][-1]["train_loss"], rel=1e-4)
    model = CMRCLIPModel.from_pretrained(tmp_path / "b")
    linear_layers = sum(type(m) is torch.nn.Linear for m in model.modules())
    assert routed["onednn_linear_layers"] == (linear_layers if onednn_linear_pays()[0] else 0) and plain["onednn_linear_layers"] == 0
    weights, reference = load_file(tmp_path / "b" / "model.safetensors"), load_file(tmp_path / "a" / "model.safetensors")
    assert weights.keys() == reference.keys()
    assert max((weights[k] - reference[k]).abs().max().item() for k in weights) < 1e-3


def test_two_process_gathered_loss_equals_single_process_loss(tmp_path):
    script = ROOT / "tests" / "distributed_loss_check.py"
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
         str(script), str(tmp_path)],
        capture_output=True, text=True, timeout=300, env={**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["world_size"] == 2 and report["backend"] == "gloo"
    assert report["gathered_loss"] == pytest.approx(report["single_process_loss"], abs=1e-5)
    assert report["max_grad_difference"] < 1e-6 * report["max_grad"]  # float32 summation order, relative to the largest


def test_resume_latest_without_checkpoint_is_a_clear_error(corpus, tmp_path):
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
        train(tiny_train_config(corpus, tmp_path, resume="latest"))


def test_not_a_corpus_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="cmr-clip prepare"):
        train(tiny_train_config(tmp_path, tmp_path / "out"))


def test_frame_choice_middle_at_eval_random_in_training():
    frames = torch.arange(10, dtype=torch.uint8)[:, None, None].expand(10, 2, 2)
    slots = torch.tensor([[0, 4], [4, 6], [6, 10], [10, 10]])
    chosen = choose_frames(frames, slots, None)
    assert chosen[:, 0, 0].tolist() == [1, 4, 7, 0]  # (a + b - 1) // 2, and a zero frame for the empty slot
    draws = {tuple(choose_frames(frames, slots, example_rng(0, 0, i))[:, 0, 0].tolist()) for i in range(30)}
    assert len(draws) > 5
    assert all(0 <= a < 4 and 4 <= b < 6 and 6 <= c < 10 and d == 0 for a, b, c, d in draws)
    assert choose_frames(frames, slots, example_rng(3, 1, 2)).equal(choose_frames(frames, slots, example_rng(3, 1, 2)))


def test_augmentation_is_one_crop_and_flip_per_study():
    frames = torch.randint(0, 255, (5, 32, 32), dtype=torch.uint8)
    frames[:] = frames[0]  # identical frames stay identical after augmentation
    out = Augmentation()(frames, np.random.default_rng(1))
    assert out.shape == frames.shape and out.dtype == torch.uint8
    assert all(out[i].equal(out[0]) for i in range(5))
    assert not out.equal(frames)


IMPRESSION = "1. Dilated LV, LVEF 31%.\n2. Subendocardial LGE of the inferior wall. Normal RV size and function. No effusion."
SENTENCES = ["Dilated LV, LVEF 31%.", "Subendocardial LGE of the inferior wall.", "Normal RV size and function.",
             "No effusion."]


def test_sentence_sampling_keeps_whole_sentences_in_order():
    """With `sentence_keep` < 1 a training impression is a non-empty, ordered subset of its sentences, each kept
    about that often; list numbers go, decimals and commas inside a sentence stay; 1 keeps the text as it is."""
    sampler = Augmentation(sentence_keep=0.5)
    draws = [sampler.impression(IMPRESSION, np.random.default_rng(i)) for i in range(400)]
    kept = []
    for text in draws:
        chosen = [s for s in SENTENCES if s in text]
        assert chosen and " ".join(chosen) == text
        kept.append(len(chosen))
    assert 0.4 < np.mean(kept) / len(SENTENCES) < 0.65  # 0.5, plus the draws that kept none and got one back
    assert Augmentation().impression(IMPRESSION, np.random.default_rng(0)) == IMPRESSION
    assert sampler.impression("No LGE.", np.random.default_rng(0)) == "No LGE."
    with pytest.raises(ValueError, match="sentence_keep"):
        Augmentation(sentence_keep=0.0)


def test_sentence_sampling_reaches_training_examples_and_repeats_on_resume(corpus, tmp_path):
    from datasets import load_from_disk

    split = load_from_disk(str(corpus))["train"].map(lambda row: {"impression": IMPRESSION})
    sampled = StudyTextDataset(split, train=True, seed=1, augmentation=Augmentation(sentence_keep=0.3))
    texts = [sampled[i]["impression"] for i in range(len(split))]
    assert len(set(texts)) > 1 and all(t != IMPRESSION and t.split(". ")[0].rstrip(".") + "." in SENTENCES for t in texts)
    assert StudyTextDataset(split, train=False, augmentation=Augmentation(sentence_keep=0.3))[0]["impression"] == IMPRESSION
    again = StudyTextDataset(split, train=True, seed=1, augmentation=Augmentation(sentence_keep=0.3))
    assert [again[i]["impression"] for i in range(len(split))] == texts
    with pytest.raises(ValueError, match="--task report"):
        train(tiny_train_config(corpus, tmp_path, task="report", sentence_keep=0.5))


def test_sentence_pairs_draw_whole_sentences_and_keep_the_impression_draw():
    """With `sentence_pairs` a training study also carries that many sentences of its whole impression, in their
    order and without repeats, and the list of them; the impression itself is drawn exactly as without (the
    sentences are drawn after it)."""
    one, two, every = (Augmentation(sentence_keep=0.5, sentence_pairs=n) for n in (1, 2, 99))
    plain = Augmentation(sentence_keep=0.5)
    drawn = []
    for i in range(200):
        texts = one.texts(IMPRESSION, np.random.default_rng(i))
        assert texts["impression"] == plain.impression(IMPRESSION, np.random.default_rng(i))
        assert texts["sentences"] == SENTENCES and len(texts["drawn"]) == 1 and texts["drawn"][0] in SENTENCES
        drawn.append(texts["drawn"][0])
        pair = two.texts(IMPRESSION, np.random.default_rng(i))["drawn"]
        assert len(set(pair)) == 2 and sorted(pair, key=SENTENCES.index) == pair
    assert set(drawn) == set(SENTENCES)
    assert every.texts(IMPRESSION, np.random.default_rng(0))["drawn"] == SENTENCES
    assert plain.texts(IMPRESSION, np.random.default_rng(0)).keys() == {"impression"}
    with pytest.raises(ValueError, match="sentence_pairs"):
        Augmentation(sentence_pairs=-1)


def test_sentence_keys_ignore_case_and_spacing_and_pad_with_minus_one():
    from cmr_clip.data.collate import sentence_key, sentence_keys

    assert sentence_key("No pericardial effusion.") == sentence_key("no  pericardial effusion") >= 0
    assert sentence_key("No pericardial effusion.") != sentence_key("Small pericardial effusion.")
    keys = sentence_keys([{"drawn": ["Dilated LV.", "No effusion."], "sentences": ["Dilated LV.", "No effusion."]},
                          {"drawn": ["Normal RV."], "sentences": ["Normal RV."]}])
    assert keys["sentence_keys"].tolist() == [sentence_key("Dilated LV."), sentence_key("No effusion."),
                                              sentence_key("Normal RV.")]
    assert keys["study_sentence_keys"].tolist() == [[sentence_key("Dilated LV."), sentence_key("No effusion.")],
                                                    [sentence_key("Normal RV."), -1]]


def _nce_by_hand(logits: np.ndarray, positive: np.ndarray) -> float:
    """-log of each row's softmax mass on its positives, averaged, written out with numpy."""
    probabilities = np.exp(logits - logits.max(1, keepdims=True))
    probabilities /= probabilities.sum(1, keepdims=True)
    return float(np.mean([-np.log(probabilities[i][positive[i]].sum()) for i in range(len(logits))]))


def test_sentence_loss_counts_every_study_that_says_the_sentence_as_a_match():
    from cmr_clip.training.losses import sentence_contrastive_loss

    generator = torch.Generator().manual_seed(0)
    sentences = torch.nn.functional.normalize(torch.randn(3, 8, generator=generator), dim=-1)
    videos = torch.nn.functional.normalize(torch.randn(3, 8, generator=generator), dim=-1)
    # Study 0 drew sentence 10, which study 2's impression says too; study 1 drew 20; study 2 drew 30.
    keys = torch.tensor([10, 20, 30])
    study_keys = torch.tensor([[10, 11, -1], [20, 21, 22], [30, 10, -1]])
    positive = np.array([[True, False, True], [False, True, False], [False, False, True]])  # sentence x study
    logits = (sentences @ videos.T * 5.0).numpy()
    expected = _nce_by_hand(logits, positive) + _nce_by_hand(logits.T, positive.T)
    got = sentence_contrastive_loss(sentences, videos, keys, study_keys, torch.tensor(5.0))
    assert got.item() == pytest.approx(expected, rel=1e-5)
    # With no sentence repeated it is the symmetric InfoNCE of the pairs on the diagonal.
    alone = sentence_contrastive_loss(sentences, videos, keys, torch.tensor([[10], [20], [30]]), torch.tensor(5.0))
    targets = torch.arange(3)
    plain = (torch.nn.functional.cross_entropy(torch.from_numpy(logits), targets)
             + torch.nn.functional.cross_entropy(torch.from_numpy(logits.T), targets))
    assert alone.item() == pytest.approx(plain.item(), rel=1e-5)
    # Two sentences drawn from study 0 (the second also said by study 1): four rows against three studies.
    four = torch.cat([sentences, sentences[:1].flip(-1)])
    positive = np.array([[True, False, True], [False, True, False], [False, False, True], [True, True, False]])
    logits = (four @ videos.T * 5.0).numpy()
    got = sentence_contrastive_loss(four, videos, torch.tensor([10, 20, 30, 12]),
                                    torch.tensor([[10, 11, 12], [20, 21, 12], [30, 10, -1]]), torch.tensor(5.0))
    assert got.item() == pytest.approx(_nce_by_hand(logits, positive) + _nce_by_hand(logits.T, positive.T), rel=1e-5)


def test_sentence_separation_matches_each_sentence_with_the_same_words_only():
    """Written out by hand: four drawn sentences, the first and the last the same words (key 10). Each row's
    matches are the rows with its key, itself included; the loss is the mean -log softmax mass on them at
    cosine x scale (10 unless given). Spreading the sentences apart lowers it; moving "the same words" apart raises it."""
    from cmr_clip.training.losses import sentence_separation_loss

    generator = torch.Generator().manual_seed(1)
    sentences = torch.nn.functional.normalize(torch.randn(4, 8, generator=generator), dim=-1)
    keys = torch.tensor([10, 20, 30, 10])
    positive = (keys[:, None] == keys[None, :]).numpy()
    expected = _nce_by_hand((sentences @ sentences.T * 2.0).numpy(), positive)
    assert sentence_separation_loss(sentences, keys, scale=2.0).item() == pytest.approx(expected, rel=1e-5)
    default = _nce_by_hand((sentences @ sentences.T * 10.0).numpy(), positive)
    assert sentence_separation_loss(sentences, keys).item() == pytest.approx(default, rel=1e-2)
    apart = torch.eye(4, 8)  # four orthogonal directions
    together = torch.nn.functional.normalize(torch.ones(4, 8) + 0.01 * torch.eye(4, 8), dim=-1)
    distinct = torch.tensor([1, 2, 3, 4])
    assert sentence_separation_loss(apart, distinct) < sentence_separation_loss(together, distinct)
    same_words_apart = sentence_separation_loss(apart, keys)
    same_words_together = sentence_separation_loss(torch.stack([apart[0], apart[1], apart[2], apart[0]]), keys)
    assert same_words_together < same_words_apart


def test_sentence_loss_trains_and_is_checked(corpus, tmp_path):
    from datasets import load_from_disk

    from cmr_clip.data.collate import StudyCollator

    split = load_from_disk(str(corpus))["train"].map(lambda row: {"impression": IMPRESSION})
    dataset = StudyTextDataset(split, train=True, augmentation=Augmentation(sentence_pairs=2))
    from types import SimpleNamespace
    frames_only = SimpleNamespace(normalise=lambda frames: frames.float())
    batch = StudyCollator(frames_only, lambda texts: {"input_ids": torch.zeros(len(texts), 2)})([dataset[0], dataset[1]])
    assert batch["sentence_input_ids"].shape == (4, 2) and batch["study_sentence_keys"].shape == (2, len(SENTENCES))
    result = train(tiny_train_config(corpus, tmp_path / "a", max_steps=2, sentence_loss=1.0, sentence_keep=0.5))
    assert math.isfinite(result["history"][-1]["train_loss"])
    with pytest.raises(ValueError, match="augment"):
        train(tiny_train_config(corpus, tmp_path / "b", max_steps=1, sentence_loss=1.0, augment=False))
    with pytest.raises(ValueError, match="sentence_loss"):
        train(tiny_train_config(corpus, tmp_path / "c", max_steps=1, sentence_loss=-1.0))
    with pytest.raises(ValueError, match="sentence_pairs"):
        train(tiny_train_config(corpus, tmp_path / "c", max_steps=1, sentence_loss=1.0, sentence_pairs=0))
    with pytest.raises(ValueError, match="--task report"):
        train(tiny_train_config(corpus, tmp_path / "d", task="report", sentence_loss=1.0))
    # The separation loss alone draws sentences too, and changes the steps (same seed, same batches).
    alone = train(tiny_train_config(corpus, tmp_path / "e", max_steps=2, sentence_separation=1.0, sentence_keep=0.5))
    plain = train(tiny_train_config(corpus, tmp_path / "f", max_steps=2, sentence_keep=0.5))
    assert math.isfinite(alone["history"][-1]["train_loss"])
    assert alone["history"][-1]["train_loss"] != pytest.approx(plain["history"][-1]["train_loss"], abs=1e-6)
    with pytest.raises(ValueError, match="sentence_separation"):
        train(tiny_train_config(corpus, tmp_path / "g", max_steps=1, sentence_separation=-1.0))
    with pytest.raises(ValueError, match="augment"):
        train(tiny_train_config(corpus, tmp_path / "h", max_steps=1, sentence_separation=1.0, augment=False))
    with pytest.raises(ValueError, match="--task report"):
        train(tiny_train_config(corpus, tmp_path / "i", task="report", sentence_separation=1.0))


def test_study_processor_normalise_keeps_padding_frames_zero():
    from cmr_clip.processing import CMRStudyProcessor

    frames = torch.full((1, 3, 4, 4), 128, dtype=torch.uint8)
    frames[0, 2] = 0
    x = CMRStudyProcessor(num_frames=7, image_size=4).normalise(frames)
    assert x.shape == (1, 3, 3, 4, 4)
    assert x[0, 2].abs().max() == 0
    torch.testing.assert_close(x[0, 0, 0, 0, 0], torch.tensor((128 / 255 - 0.485) / 0.229))


def test_epoch_shuffle_depends_only_on_seed_and_epoch():
    a, b = EpochShuffleSampler(20, 3), EpochShuffleSampler(20, 3)
    a.set_epoch(2), b.set_epoch(2)
    assert list(a) == list(b) and sorted(a) == list(range(20))
    b.set_epoch(3)
    assert list(a) != list(b)


def test_no_weight_decay_on_norms_biases_and_embeddings():
    from test_modeling_cmr_clip import tiny_config

    model = CMRCLIPModel(tiny_config(learnable_logit_scale=True))
    decay, no_decay = parameter_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    no_decay_names = {names[id(p)] for p in no_decay["params"]}
    assert "logit_scale" in no_decay_names
    assert "vision_model.embeddings.position_embedding" in no_decay_names
    assert all(("bias" in n or "norm" in n.lower() or "embedding" in n or "logit" in n) for n in no_decay_names)
    assert all(p.dim() >= 2 for p in decay["params"])


@pytest.mark.parametrize("name", ["train_small.yaml", "train_release_size.yaml"])
def test_example_training_configs_load(name):
    config = TrainConfig.from_file(ROOT / "examples" / name)
    assert config.projection_dim in (64, 512) and config.epochs > 0


def test_example_training_config_runs_through_the_cli(corpus, tmp_path):
    from cmr_clip.cli import main

    code = main(["train", "--config", str(ROOT / "examples" / "train_small.yaml"), "--data-dir", str(corpus),
                 "--output-dir", str(tmp_path), "--max-steps", "2", "--no-progress",
                 "--vision", '{"patch_size": 8, "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}',
                 "--text", '{"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}'])
    assert code == 0
    assert CMRCLIPModel.from_pretrained(tmp_path).config.vision_config.hidden_size == 32


def test_unknown_config_field_is_refused(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("learning_rte: 0.1\n")
    with pytest.raises(ValueError, match="unknown training options \\['learning_rte'\\]"):
        TrainConfig.from_file(bad)


def test_fine_tuning_config_is_a_run_config_read_from_a_file(tmp_path):
    """FinetuneConfig extends the loop's base config: the shared fields keep fine-tuning's defaults, the
    loop's own fields are there, and it loads from a file with the same check as TrainConfig."""
    config = FinetuneConfig(model_dir="model", labels=["lge"], lora=True, gradient_accumulation_steps=2,
                            crop_scale=[0.8, 1.0])
    assert (config.batch_size, config.learning_rate, config.output_dir) == (8, 1e-3, "cmr-clip-finetuned")
    path = tmp_path / "finetune.json"
    path.write_text(json.dumps(config.to_dict()))
    assert FinetuneConfig.from_file(path) == config
    path.write_text(json.dumps({"labels": ["lge"], "lora_rank": 4}))
    with pytest.raises(ValueError, match="unknown training options \\['lora_rank'\\]"):
        FinetuneConfig.from_file(path)


@pytest.mark.parametrize("name", ["accelerate_ddp.yaml", "accelerate_fsdp.yaml"])
def test_accelerate_recipes_parse(name):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(ROOT / "examples" / name))
    assert config.num_processes == 8 and config.mixed_precision == "bf16"
    if name == "accelerate_fsdp.yaml":
        assert config.fsdp_config["fsdp_version"] == 2


def test_training_dataset_without_augmentation_only_draws_frames(corpus):
    from datasets import load_from_disk

    split = load_from_disk(str(corpus))["train"]
    plain = StudyTextDataset(split, train=True, seed=1, augmentation=None)
    augmented = StudyTextDataset(split, train=True, seed=1, augmentation=Augmentation(flip=1.0))
    row = split.with_format("torch", columns=["frames", "slots"])[0]
    drawn = choose_frames(row["frames"], row["slots"], example_rng(1, 0, 0)).to(torch.uint8)
    assert plain[0]["frames"].equal(drawn)
    assert not augmented[0]["frames"].equal(drawn)


def test_contrastive_training_in_bf16_on_cpu_learns_as_fp32_does(corpus, tmp_path):
    """bf16 autocast on the CPU: the loss falls and the validation recall matches the fp32 run's within
    the binomial noise of 6 validation studies; the losses differ slightly, so bf16 really ran. The two runs
    share one process, as in a notebook: Accelerate's one setting per process does not stop the second."""
    common = dict(epochs=3, augment=False)
    fp32_run = train(tiny_train_config(corpus, tmp_path / "fp32", mixed_precision="no", **common))
    bf16_run = train(tiny_train_config(corpus, tmp_path / "bf16", mixed_precision="bf16", **common))
    assert (fp32_run["mixed_precision"], bf16_run["mixed_precision"]) == ("no", "bf16")  # metrics.json says which ran
    assert json.loads((tmp_path / "bf16" / "metrics.json").read_text())["mixed_precision"] == "bf16"
    fp32, bf16 = fp32_run["history"], bf16_run["history"]
    assert bf16[-1]["train_loss"] < bf16[0]["train_loss"]
    assert bf16[0]["train_loss"] != fp32[0]["train_loss"]
    assert bf16[0]["train_loss"] == pytest.approx(fp32[0]["train_loss"], rel=0.05)
    n = fp32[-1]["n"]
    for key in ("text_to_study_R@5", "study_to_text_R@5"):
        p = (fp32[-1][key] + bf16[-1][key]) / 2
        assert abs(fp32[-1][key] - bf16[-1][key]) <= 2 * math.sqrt(2 * p * (1 - p) / n) + 1e-9, key
    assert CMRCLIPModel.from_pretrained(tmp_path / "bf16").dtype == torch.float32  # the weights stay fp32


def test_zero_copy_reads_give_the_rows_datasets_gives(tmp_path):
    """Studies read straight from the Arrow buffers are the rows `datasets` gives: with candidate stacks of
    different lengths, empty slots, a corpus of several Arrow chunks, a slice of one (its Arrow offsets do not
    start at 0) and one re-indexed by shuffle/select."""
    from datasets import concatenate_datasets, load_from_disk

    rng = np.random.default_rng(5)
    features = Features({"frames": Array3D(shape=(None, 6, 5), dtype="uint8"),
                         "slots": Array2D(shape=(3, 2), dtype="int32"), "impression": Value("string")})
    parts = []
    for part in range(2):
        rows = {"frames": [], "slots": [], "impression": []}
        for i in range(7):
            length = int(rng.integers(1, 9))
            rows["frames"].append(rng.integers(0, 256, (length, 6, 5)).astype(np.uint8))
            cut = sorted(rng.integers(0, length + 1, 2))
            rows["slots"].append(np.array([[0, cut[0]], [cut[0], cut[1]], [cut[1], length]], np.int32))
            rows["impression"].append(f"Study {part}-{i}. Sentence two. Sentence three.")
        Dataset.from_dict(rows, features=features).save_to_disk(str(tmp_path / f"part{part}"))
        parts.append(load_from_disk(str(tmp_path / f"part{part}")))
    joined = concatenate_datasets(parts)
    assert joined.data.table.column("frames").num_chunks == 2
    sliced = joined.select(range(3, 11))
    assert sliced.data.table.column("frames").chunk(0).storage.offsets[0].as_py() > 0
    for split in (parts[0], joined, sliced, joined.shuffle(seed=2).select([9, 0, 13, 4])):
        zero_copy = StudyTextDataset(split)
        assert zero_copy.arrow is not None
        for i in range(-1, len(split)):
            row = split[i]
            stack = np.asarray(row["frames"], np.uint8)
            expected = [stack[(a + b - 1) // 2] if b > a else np.zeros((6, 5), np.uint8) for a, b in row["slots"]]
            got = zero_copy[i]
            assert got["frames"].dtype == torch.uint8 and np.array_equal(got["frames"].numpy(), np.stack(expected))
            assert got["impression"] == row["impression"]
        augmentation = Augmentation(scale=(0.5, 1.0), flip=0.5, sentence_keep=0.5)
        fast = StudyTextDataset(split, train=True, seed=3, augmentation=augmentation)
        slow = StudyTextDataset(split, train=True, seed=3, augmentation=augmentation, zero_copy=False)
        assert slow.arrow is None
        for epoch in (0, 1):
            fast.set_epoch(epoch)
            slow.set_epoch(epoch)
            for i in range(len(split)):
                assert fast[i]["frames"].equal(slow[i]["frames"]) and fast[i]["impression"] == slow[i]["impression"]
    with pytest.raises(IndexError):
        StudyTextDataset(parts[0])[len(parts[0])]
    # A spawned data loader worker gets the dataset pickled: the views are rebuilt there, not copied over.
    dataset = StudyTextDataset(joined)
    pickled = pickle.dumps(dataset)
    by_reference = len(pickle.dumps(StudyTextDataset(joined, zero_copy=False)))
    assert len(pickled) < by_reference + sum(chunk[0].nbytes for chunk in dataset.arrow.chunks) / 2
    again = pickle.loads(pickled)
    assert again.arrow is not None and all(again[i]["frames"].equal(dataset[i]["frames"]) for i in range(len(joined)))
    # A split laid out otherwise (here without impressions) is read through `datasets`, as before.
    assert StudyTextDataset(parts[0].remove_columns("impression")).arrow is None


def test_evaluating_less_often_trains_the_same_weights(corpus, tmp_path):
    """`eval_every` only skips validation passes: evaluation leaves the random state as it found it, so the
    weights (dropout masks included) are those of a run that evaluates every epoch, and the last epoch is
    always evaluated."""
    every = train(tiny_train_config(corpus, tmp_path / "every", epochs=4))
    sparse = train(tiny_train_config(corpus, tmp_path / "sparse", epochs=4, eval_every=3))
    a, b = load_file(str(tmp_path / "every" / "model.safetensors")), load_file(str(tmp_path / "sparse" / "model.safetensors"))
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)
    evaluated = [record["epoch"] for record in sparse["history"] if "text_to_study_R@5" in record]
    assert evaluated == [3, 4]
    assert all("text_to_study_R@5" in record for record in every["history"])
    assert [r["train_loss"] for r in every["history"]] == [r["train_loss"] for r in sparse["history"]]
    with pytest.raises(ValueError, match="eval_every"):
        train(tiny_train_config(corpus, tmp_path / "bad", eval_every=0))
