"""Builders shared by the zero-shot, index and evaluation tests (no tests here): a random-weight CMR-CLIP saved
with a hand-made tokenizer and a study processor, and a tiny synthetic cohort."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import BertConfig, BertTokenizer

from cmr_clip import CMRCLIPConfig, CMRCLIPModel, CMRCLIPProcessor, CMRStudyProcessor

WORDS = ["normal", "reduced", "lv", "rv", "systolic", "function", "dilated", "dilation", "size", "hypertrophy",
         "wall", "thickness", "late", "gadolinium", "enhancement", "lge", "no", "aortic", "root", "lvef", "%", ".",
         "severe", "with", "transmural", "left", "right", "ventricle", "is", "not", "pericardial", "effusion"]
NUM_FRAMES, IMAGE_SIZE = 8, 16


def tiny_tokenizer() -> BertTokenizer:
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    digits = [str(d) for d in range(10)] + [f"##{d}" for d in range(10)]
    vocab = {token: i for i, token in enumerate(specials + WORDS + digits)}
    return BertTokenizer(vocab=vocab, do_lower_case=True)


def tiny_config(seed_offset: int = 0) -> CMRCLIPConfig:
    text = BertConfig(vocab_size=len(tiny_tokenizer().get_vocab()), hidden_size=32, num_hidden_layers=1,
                      num_attention_heads=2, intermediate_size=64, max_position_embeddings=64 + seed_offset)
    return CMRCLIPConfig(
        vision_config=dict(num_frames=NUM_FRAMES, image_size=IMAGE_SIZE, patch_size=8, hidden_size=32,
                           num_hidden_layers=1, num_attention_heads=2, intermediate_size=64),
        text_config=text.to_dict(), projection_dim=16, max_text_length=32,
    )


def save_random_model(path: Path, seed: int = 0) -> Path:
    """A random-weight CMR-CLIP with its CMRCLIPProcessor in `path`, as `save_pretrained` writes them."""
    torch.manual_seed(seed)
    CMRCLIPModel(tiny_config()).save_pretrained(path)
    processor = CMRCLIPProcessor(tokenizer=tiny_tokenizer(),
                                 feature_extractor=CMRStudyProcessor(num_frames=NUM_FRAMES, image_size=IMAGE_SIZE))
    processor.save_pretrained(path)
    return path


FINDINGS = ["lv_dilation", "lge"]


def tiny_corpus(n_per_split: int = 8, seed: int = 0):
    """A prepared-corpus DatasetDict (the columns `cmr-clip prepare` writes) of random frames whose labels
    and impressions follow two findings."""
    import json

    import numpy as np
    from datasets import Dataset, DatasetDict

    from cmr_clip.data.prepare import corpus_features

    rng = np.random.default_rng(seed)
    splits = {}
    for name in ("train", "validation", "test"):
        rows = {key: [] for key in corpus_features(NUM_FRAMES, IMAGE_SIZE)}
        for i in range(n_per_split):
            labels = {f: bool((i >> bit) & 1) for bit, f in enumerate(FINDINGS)}
            words = ["dilated lv ." if labels["lv_dilation"] else "normal lv size .",
                     "late gadolinium enhancement ." if labels["lge"] else "no lge ."]
            bounds = np.linspace(0, 10, NUM_FRAMES + 1).astype(int)
            rows["study_id"].append(f"{name}{i:03d}")
            rows["frames"].append(rng.integers(0, 255, (10, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8))
            rows["slots"].append(np.stack([bounds[:-1], bounds[1:]], 1).astype(np.int32))
            rows["impression"].append(" ".join(words))
            rows["labels"].append(json.dumps(labels))
            rows["vendor"].append(["siemens", "ge"][i % 2])
            rows["field_strength"].append([1.5, 3.0][(i // 2) % 2])
            rows["metadata"].append("{}")
        splits[name] = Dataset.from_dict(rows, features=corpus_features(NUM_FRAMES, IMAGE_SIZE))
    return DatasetDict(splits)
