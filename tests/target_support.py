"""Builders for the CMR-TARGET tests (no tests here): a decoder tokenizer learned from a few impressions and
a tiny CMR-TARGET built from a random CMR-CLIP, saved with its processor."""

from __future__ import annotations

from pathlib import Path

import torch
from test_zero_shot_support import IMAGE_SIZE, NUM_FRAMES, save_random_model

from cmr_clip import CMRTargetForConditionalGeneration, CMRTargetProcessor
from cmr_clip.data.prepare import train_report_tokenizer
from cmr_clip.processing import CMRStudyProcessor

IMPRESSIONS = [
    "Normal LV size and systolic function (LVEF 62%). No late gadolinium enhancement.",
    "Moderately reduced LV systolic function (LVEF 38%). Transmural late gadolinium enhancement of the inferior wall.",
    "Dilated right ventricle with preserved systolic function. No pericardial effusion.",
    "Concentric left ventricular hypertrophy (maximal wall thickness 16 mm). Small pericardial effusion.",
    "Normal cardiac MRI. No pericardial effusion. Normal aortic root dimensions (31 mm).",
    "Severely impaired left ventricular systolic function, LVEF 22%. Dilated aortic root measuring 44 mm.",
]
DECODER = dict(model_type="gpt2", n_embd=32, n_layer=2, n_head=2, n_positions=128)


def tiny_report_tokenizer():
    tokenizer = train_report_tokenizer(IMPRESSIONS * 4, vocab_size=300)
    CMRTargetProcessor.add_special_tokens(tokenizer)
    return tokenizer


def tiny_target(tmp: Path, video_token_pooling: str = "cls_frames", seed: int = 0, n_positions: int = 128, **fields):
    """(model, processor) of a random tiny CMR-TARGET built from a random tiny CMR-CLIP saved in `tmp`; its decoder
    holds `n_positions` tokens (the pipeline's default of 160 new tokens needs more than 128)."""
    clip_dir = save_random_model(Path(tmp) / "clip", seed=seed)
    tokenizer = tiny_report_tokenizer()
    torch.manual_seed(seed)
    model = CMRTargetForConditionalGeneration.from_cmr_clip(
        clip_dir, decoder=dict(DECODER, n_positions=n_positions, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                               pad_token_id=tokenizer.pad_token_id),
        video_token_id=tokenizer.convert_tokens_to_ids("<|video|>"),
        sentence_token_id=tokenizer.convert_tokens_to_ids("<|sep|>"), vocab_size=len(tokenizer),
        video_token_pooling=video_token_pooling, num_frame_tokens=4, **fields,
    )
    processor = CMRTargetProcessor(tokenizer=tokenizer,
                                   feature_extractor=CMRStudyProcessor(num_frames=NUM_FRAMES, image_size=IMAGE_SIZE),
                                   num_video_tokens=model.config.num_video_tokens)
    return model, processor


def save_tiny_target(path: Path, seed: int = 0, n_positions: int = 128) -> Path:
    model, processor = tiny_target(path, seed=seed, n_positions=n_positions)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def random_videos(batch: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, NUM_FRAMES, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(seed))
