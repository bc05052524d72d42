"""The training configurations: `TrainingSchedule` (what every training run sets, the demo included),
`RunConfig` (everything the one training loop reads, on top of it), and `TrainConfig`, the CMR-CLIP and
CMR-TARGET run that extends it (`FinetuneConfig`, in `tasks.classification`, is the other). Loadable from
YAML or JSON and overridable from the command line (every field is also a `--flag`)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


@dataclass
class TrainingSchedule:
    """How long and how fast a run trains, from which seed."""

    epochs: int = 10
    """Passes over the training split (`max_steps` stops earlier)."""
    batch_size: int = 16
    """Per process; contrastive negatives are gathered across processes."""
    learning_rate: float = 1e-4
    """AdamW's peak learning rate (cosine schedule after a linear warmup)."""
    seed: int = 0
    """Seeds the model's initialisation, the data order, frame choice and augmentation."""
    progress: bool = True
    """Show progress bars."""

    def schedule(self) -> dict[str, Any]:
        """The `TrainingSchedule` fields alone, to pass on to a run's configuration."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(TrainingSchedule)}


@dataclass
class RunConfig(TrainingSchedule):
    """A run of the training loop (`training.loop.run`): data, output, optimisation, checkpoints. Task
    configurations extend it with their own fields."""

    data_dir: str = ""
    """A prepared corpus (`cmr-clip prepare`): a `datasets.DatasetDict` saved with `save_to_disk`."""
    output_dir: str = "cmr-clip-model"
    """Where checkpoints (`checkpoints/`), the final model, processor and `metrics.json` go."""
    max_steps: int | None = None
    """Stop after this many optimizer steps (default: `epochs` full epochs)."""
    eval_batch_size: int = 32
    """Studies per evaluation batch."""
    eval_every: int = 1
    """Evaluate on the validation split every N epochs and after the last (1: every epoch). Evaluation leaves
    the random state as it found it, so the trained weights do not depend on N."""
    gradient_accumulation_steps: int = 1
    """Batches per optimizer step."""
    weight_decay: float = 0.05
    """AdamW weight decay (not on norms, biases, embeddings and the logit scale)."""
    warmup_ratio: float = 0.1
    """Fraction of the steps with a linear learning-rate warmup."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm (0: no clipping)."""
    mixed_precision: str = "auto"
    """`auto` (bf16 autocast where the CPU or GPU computes bfloat16 natively, float32 elsewhere; the log says
    which), `no`, `bf16` or `fp16` (Accelerate)."""
    onednn_linear: bool = False
    """Float32 training on the CPU: route the Linear layers through oneDNN where that pays (an AMD CPU with
    AVX-512, on which torch's MKL products take their AVX2 path; `precision.use_onednn_linear`); results agree
    with torch's to float32 rounding. Not with FSDP. `metrics.json` says how many layers it routed."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass (less memory, more time)."""
    augment: bool = True
    """Random resized crop and flip per training study. Without it, fine-tuning also takes each slot's middle
    frame, as at evaluation (CMR-CLIP and CMR-TARGET training still draw a random one)."""
    crop_scale: list = field(default_factory=lambda: [0.5, 1.0])
    """Area range of the random resized crop (the release's 0.5-1); narrower keeps sizes comparable."""
    flip_probability: float = 0.5
    """Probability of a horizontal flip per study."""
    sentence_keep: float = 1.0
    """CMR-CLIP training: each sentence of a training impression is kept with this probability (at least one
    is), so that the text tower learns each finding's sentence on its own, as zero-shot prompts are read;
    1 reads whole impressions (the release). Part of `augment`."""
    sentence_loss: float = 0.0
    """CMR-CLIP training: weight of a second contrastive loss between studies and single sentences, one drawn
    at random from each training impression, where every study in the batch whose impression holds that
    sentence counts as its match (`training.losses.sentence_contrastive_loss`). A sentence read on its own
    has to carry its meaning itself, negation included ("No pericardial effusion."), as zero-shot prompts
    do. 0: off (the release). Part of `augment`."""
    sentence_separation: float = 0.0
    """CMR-CLIP training: weight of a text-only loss that sets the batch's drawn sentences apart from one another
    (`training.losses.sentence_separation_loss`): each sentence matches only the sentences that say the same
    words. Contrastive training alone lets both towers settle on the few directions that tell a small batch's
    impressions apart (on the demo's cohort: a large heart, a thick wall), so that the text tower never
    encodes "reduced RV systolic function" apart from "normal RV systolic function" and nothing asks the video
    tower to see it; this loss makes every sentence its own direction. Uses no label. 0: off (the release).
    Part of `augment`."""
    sentence_pairs: int = 1
    """With `sentence_loss` or `sentence_separation`: sentences drawn from each training impression per step (all
    of them where it has fewer)."""
    checkpoint_every: int = 0
    """Save `accelerator.save_state` every N optimizer steps (0: only at the end of each epoch)."""
    save_total_limit: int = 2
    """Checkpoints kept in `output_dir/checkpoints` (the oldest are deleted)."""
    resume: str | None = None
    """`latest` or a checkpoint directory."""
    num_workers: int = 0
    """Data loader worker processes."""
    log_with: str | None = None
    """An Accelerate tracker (`tensorboard`, `wandb`, ...) or `all`."""

    @classmethod
    def from_file(cls, path: str | Path, **overrides) -> "RunConfig":
        path = Path(path)
        text = path.read_text()
        if path.suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text) or {}
        else:
            data = json.loads(text)
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"{path}: unknown training options {sorted(unknown)}; see `cmr-clip train --help`.")
        return cls(**{**data, **overrides})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class TrainConfig(RunConfig):
    """A CMR-CLIP (contrastive) or CMR-TARGET (report) training run. Paths may be local directories; nothing
    is downloaded unless a Hub name is given."""

    task: str = "contrastive"
    """`contrastive` trains CMR-CLIP; `report` trains CMR-TARGET (impressions from video features)."""

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

    max_text_length: int = 128
    """Impressions are truncated to this many tokens."""

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
    push_to_hub: str | None = None
    """A repo id to push the final model and processor to."""

