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
