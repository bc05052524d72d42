"""`TrainConfig`: everything a CMR-CLIP training run needs, loadable from YAML or JSON and overridable
from the command line (`cmr-clip train` makes every field a `--flag`)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class TrainConfig:
    """A training run. Paths may be local directories; nothing is downloaded unless a Hub name is given."""

    task: str = "contrastive"
    """`contrastive` trains CMR-CLIP; `report` trains CMR-TARGET (impressions from video features)."""
    data_dir: str = ""
    """A prepared corpus (`cmr-clip prepare`): a `datasets.DatasetDict` saved with `save_to_disk`."""
    output_dir: str = "cmr-clip-model"
    """Where checkpoints (`checkpoints/`), the final model, processor and `metrics.json` go."""

    init_from: str | None = None
    """A CMR-CLIP directory or Hub id to continue training from (its tokenizer is used)."""
    text_model: str | None = None
    """A pretrained text encoder (name or directory) for a fresh model; with `vision_model`, a ViT."""
    vision_model: str | None = None
    tokenizer: str | None = None
    """Tokenizer directory for a fresh model; default: `text_model`, else the corpus's `tokenizer/`."""
    vision: dict = field(default_factory=dict)
    """`CMRCLIPVisionConfig` fields for a fresh video tower (num_frames and image_size come from the corpus)."""
    text: dict = field(default_factory=dict)
    """BERT config fields for a text tower trained from scratch (when no `text_model`)."""
    projection_dim: int = 512
    text_pooling: str = "mean"
    projection_type: str = "minimal"
    learnable_logit_scale: bool = False
    temperature: float = 0.05
    attn_implementation: str = "sdpa"

    cmr_clip_model: str | None = None
    """Report task: the trained CMR-CLIP (directory or Hub id) whose video tower CMR-TARGET starts from;
    `init_from` instead continues a CMR-TARGET."""
    decoder: str | None = None
    """Report task: a pretrained causal LM (name or directory) and its tokenizer; default a fresh GPT-2
    with a byte-level BPE tokenizer learned from the training impressions."""
    decoder_config: dict = field(default_factory=dict)
    """Report task: config fields of the fresh decoder (`model_type` "gpt2" unless given)."""
    report_vocab_size: int = 1000
    video_token_pooling: str = "cls_frames"
    """Report task: `cls` (one video token) or `cls_frames` (CLS plus `num_frame_tokens` pooled frame tokens)."""
    num_frame_tokens: int = 16
    freeze_vision: bool = True
    """Report task: keep the CMR-CLIP video tower fixed (the projector and decoder learn)."""

    epochs: int = 10
    max_steps: int | None = None
    batch_size: int = 16
    """Per process; contrastive negatives are gathered across processes."""
    eval_batch_size: int = 32
    gradient_accumulation_steps: int = 1
    learning_rate: float = 1e-4
    weight_decay: float = 0.05
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    mixed_precision: str = "no"
    """`no`, `bf16` or `fp16` (Accelerate)."""
    gradient_checkpointing: bool = False
    augment: bool = True
    crop_scale: list = field(default_factory=lambda: [0.5, 1.0])
    """Area range of the random resized crop (the release's 0.5-1); narrower keeps sizes comparable."""
    flip_probability: float = 0.5
    max_text_length: int = 128

    checkpoint_every: int = 0
    """Save `accelerator.save_state` every N optimizer steps (0: only at the end of each epoch)."""
    save_total_limit: int = 2
    resume: str | None = None
    """`latest` or a checkpoint directory."""
    seed: int = 0
    num_workers: int = 0

    streaming: bool = False
    """Read and process the studies while training (`stream_corpus`) instead of a prepared corpus: for
    archives too large to prepare; contrastive task only."""
    studies_dir: str | None = None
    """Streaming: the folder of studies (one folder or .zip per study_id), as `cmr-clip prepare --studies`."""
    reports: str | None = None
    """Streaming: the reports file (JSONL or CSV), as `cmr-clip prepare --reports`."""
    stream_processor: dict = field(default_factory=dict)
    """Streaming: `CMRStudyProcessor` fields (layout, num_frames, image_size, ...)."""
    shuffle_buffer: int = 1
    """Streaming: the shuffle buffer on top of the per-epoch study shuffle (see `cmr_clip.data.streaming`)."""
    log_with: str | None = None
    """An Accelerate tracker (`tensorboard`, `wandb`, ...) or `all`."""
    push_to_hub: str | None = None
    """A repo id to push the final model and processor to."""
    progress: bool = True

    @classmethod
    def from_file(cls, path: str | Path, **overrides) -> "TrainConfig":
        path = Path(path)
        text = path.read_text()
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            data = json.loads(text)
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"{path}: unknown training options {sorted(unknown)}; see `cmr-clip train --help`.")
        return cls(**{**data, **overrides})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

