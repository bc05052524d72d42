"""The CMR-CLIP training loop on Accelerate: one CPU to many GPUs, mixed precision, gradient
accumulation and checkpointing, contrastive negatives gathered across processes, checkpoints that resume
to the same weights, retrieval evaluation every epoch."""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm
from transformers import AutoTokenizer, BertConfig, get_cosine_schedule_with_warmup

from ..data.augment import Augmentation
from ..data.collate import ImpressionTokenizer, StudyCollator
from ..data.dataset import StudyTextDataset
from ..data.streaming import batches_on_every_process, open_streams, process_part
from ..embeddings import embed_batches
from ..evaluation.retrieval import retrieval_metrics
from ..modeling import CMRCLIPConfig, CMRCLIPModel, CMRCLIPVisionConfig
from ..modeling.modeling_cmr_clip import load_vit_weights
from ..privacy import write_json
from .checkpointing import configure_fsdp_wrapping, read_process_state, write_process_state
from .config import TrainConfig
from .losses import gathered_contrastive_loss

logger = logging.getLogger(__name__)

STATE_FILE = "trainer_state.json"
CHECKPOINTS = "checkpoints"


class EpochShuffleSampler(torch.utils.data.Sampler):
    """A permutation that depends only on (seed, epoch), so a resumed run sees the same order."""

    def __init__(self, length: int, seed: int):
        self.length, self.seed, self.epoch = length, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __iter__(self):
        return iter(np.random.default_rng([self.seed, self.epoch]).permutation(self.length).tolist())


def load_corpus(data_dir: str):
    from datasets import load_from_disk

    path = Path(data_dir)
    if not (path / "dataset_dict.json").is_file():
        raise FileNotFoundError(
            f"{data_dir} is not a prepared corpus (no dataset_dict.json); create one with `cmr-clip prepare`."
        )
    corpus = load_from_disk(str(path))
    if "train" not in corpus:
        raise ValueError(f"{data_dir} has no 'train' split (splits: {list(corpus)}).")
    return corpus


def corpus_video_shape(split) -> tuple[int, int]:
    """(frames per study, image size) of a prepared or streamed split, from its features."""
    height, width = split.features["frames"].shape[-2:]
    if height != width:
        raise ValueError(f"prepared frames must be square, got {height}x{width}")
    return int(split.features["slots"].shape[0]), int(height)


def resolve_tokenizer(config: TrainConfig):
    source = config.init_from or config.tokenizer or config.text_model
    if source is None:
        candidate = Path(config.data_dir) / "tokenizer"
        if not candidate.is_dir():
            raise ValueError(
                "No tokenizer: give `tokenizer`, `text_model` or `init_from`, or put one in the corpus's tokenizer/."
            )
        source = str(candidate)
    return AutoTokenizer.from_pretrained(source)


def check_video_shape(vision, num_frames: int, image_size: int, source: str) -> None:
    """The corpus's studies must fit the video tower of `source` (a model directory or name)."""
    if vision.num_frames < num_frames or vision.image_size != image_size:
        raise ValueError(
            f"{source} takes up to {vision.num_frames} frames of {vision.image_size} px; the corpus has "
            f"{num_frames} of {image_size} px. Prepare the corpus with a matching layout and image size."
        )


def build_model(config: TrainConfig, tokenizer, num_frames: int, image_size: int) -> CMRCLIPModel:
    if config.init_from:
        model = CMRCLIPModel.from_pretrained(config.init_from, attn_implementation=config.attn_implementation)
        check_video_shape(model.config.vision_config, num_frames, image_size, config.init_from)
        return model.train()
    head = dict(projection_dim=config.projection_dim, text_pooling=config.text_pooling,
                projection_type=config.projection_type, learnable_logit_scale=config.learnable_logit_scale,
                temperature=config.temperature, max_text_length=config.max_text_length)
    vision_fields = {**config.vision, "num_frames": num_frames, "image_size": image_size}
    if config.text_model:
        model = CMRCLIPModel.from_text_vision_pretrained(
            config.text_model, config.vision_model, num_frames=num_frames,
            vision_config=CMRCLIPVisionConfig(**vision_fields), **head,
        )
    else:
        text_config = BertConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                                 max_position_embeddings=max(config.max_text_length, 32), **config.text)
        model = CMRCLIPModel(CMRCLIPConfig(vision_config=vision_fields, text_config=text_config, **head))
        if config.vision_model:
            from transformers import ViTModel

            load_vit_weights(model.vision_model, ViTModel.from_pretrained(config.vision_model))
    model.set_attn_implementation(config.attn_implementation)
    return model.train()


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: no weight decay on norms, biases, embeddings, tokens and the logit scale."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param.dim() < 2 or "embedding" in name or "embeddings" in name or "logit_scale" in name:
            no_decay.append(param)
        else:
            decay.append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def latest_checkpoint(output_dir: str) -> Path | None:
    root = Path(output_dir) / CHECKPOINTS
    done = sorted(p for p in root.glob("step-*") if (p / STATE_FILE).is_file()) if root.is_dir() else []
    return done[-1] if done else None


def new_state() -> dict:
    """The loop's position, saved with every checkpoint: optimizer steps done, the epoch and the batches of
    it already seen, that epoch's losses so far and the per-epoch history."""
    return {"global_step": 0, "epoch": 0, "batches_in_epoch": 0, "epoch_losses": [], "history": []}


def checkpoint_to_resume(output_dir: str, resume: str) -> Path:
    """The checkpoint `resume` names (`latest`: the newest complete one in `output_dir`)."""
    path = latest_checkpoint(output_dir) if resume == "latest" else Path(resume)
    if path is None:
        raise FileNotFoundError(f"--resume latest: no complete checkpoint in {output_dir}/{CHECKPOINTS}")
    return path


def resume_state(accelerator: Accelerator, output_dir: str, resume: str) -> dict:
    """Load the checkpoint `resume` names into the prepared model, optimizer, scheduler and RNGs; returns
    its loop state."""
    path = checkpoint_to_resume(output_dir, resume)
    accelerator.load_state(str(path))
    state = json.loads((path / STATE_FILE).read_text())
    logger.info("Resumed from %s at step %d", path.name, state["global_step"])
    return state


def save_checkpoint(accelerator: Accelerator, config, state: dict, process_state: dict | None = None) -> Path:
    """`accelerator.save_state` into a temporary directory renamed when complete, so that a run killed
    while saving never leaves a half-written checkpoint for `--resume latest` to pick. `config`: any run
    configuration with `output_dir` and `save_total_limit` (`TrainConfig`, `FinetuneConfig`).
    `process_state`: this process's own position (a stream's), saved beside the shared state."""
    root = Path(config.output_dir) / CHECKPOINTS
    final = root / f"step-{state['global_step']:08d}"
    partial = root / f".partial-{final.name}"
    if accelerator.is_main_process and partial.exists():
        shutil.rmtree(partial)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial))
    if process_state is not None:
        write_process_state(partial, accelerator, process_state)
        accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (partial / STATE_FILE).write_text(json.dumps(state, indent=2))
        if final.exists():
            shutil.rmtree(final)
        os.replace(partial, final)
        kept = sorted(p for p in root.glob("step-*") if p.is_dir())
        for old in kept[: max(0, len(kept) - config.save_total_limit)]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


class ContrastiveTask:
    """CMR-CLIP's contrastive training: study-impression pairs, negatives gathered across processes,
    retrieval recall on the validation split."""

    def __init__(self, config: TrainConfig):
        self.config = config

    def build(self, corpus, study_processor) -> torch.nn.Module:
        num_frames, image_size = corpus_video_shape(corpus["train"])
        self.tokenizer = resolve_tokenizer(self.config)
        self.collator = StudyCollator(study_processor, ImpressionTokenizer(self.tokenizer, self.config.max_text_length))
        return build_model(self.config, self.tokenizer, num_frames, image_size)

    def loss(self, model, unwrapped, batch) -> torch.Tensor:
        out = model(pixel_values_videos=batch["pixel_values_videos"], input_ids=batch["input_ids"],
                    attention_mask=batch["attention_mask"])
        return gathered_contrastive_loss(out.text_embeds.float(), out.video_embeds.float(),
                                         unwrapped.logit_scale_value().to(out.text_embeds.device))

    def evaluate(self, model, loader, accelerator: Accelerator) -> dict[str, float]:
        embeddings = embed_batches(model, loader, accelerator)
        return retrieval_metrics(embeddings["text"], embeddings["video"])

    def save(self, model, study_processor, metrics: dict, state_dict: dict | None = None) -> None:
        save_final(model, self.tokenizer, study_processor, self.config, metrics, state_dict)


def make_task(config: TrainConfig):
    if config.task == "contrastive":
        return ContrastiveTask(config)
    if config.task == "report":
        from .report import ReportTask

        return ReportTask(config)
    raise ValueError(f"Unknown task {config.task!r}: use 'contrastive' (CMR-CLIP) or 'report' (CMR-TARGET).")


def train(config: TrainConfig) -> dict:
    """Train on a prepared corpus (CMR-CLIP with `task="contrastive"`, CMR-TARGET with `task="report"`);
    returns the metrics also written to `output_dir/metrics.json`."""
    task = make_task(config)
    accelerator = Accelerator(
        # Without a GPU, Accelerate only joins the processes a launcher started (torchrun) when told to use the CPU.
        cpu=not torch.accelerator.is_available(),
        mixed_precision=config.mixed_precision,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        log_with=config.log_with,
        project_dir=config.output_dir,
    )
    set_seed(config.seed)
    if config.streaming:
        if config.task != "contrastive":
            raise ValueError("--streaming trains CMR-CLIP (the contrastive task); prepare a corpus for --task report.")
        corpus, study_processor = open_streams(config)
    else:
        corpus = load_corpus(config.data_dir)
        study_processor = load_study_processor(config.data_dir)
    model = task.build(corpus, study_processor)
    if config.gradient_checkpointing:
        model.activation_checkpointing_enable()

    collator = task.collator
    augmentation = Augmentation(scale=tuple(config.crop_scale), flip=config.flip_probability) if config.augment else None
    # A stream's length is its number of studies (one shard each); failing studies are found only when read.
    train_studies = corpus["train"].n_shards if config.streaming else len(corpus["train"])
    if train_studies < 2:
        raise ValueError("Training needs at least 2 training studies.")
    batch_size = min(config.batch_size, train_studies)
    # The loader's own generator keeps its per-epoch seed draw off the global RNG, whose state a checkpoint
    # restores: a resumed run then draws the same dropout masks as an uninterrupted one.
    loader_options = dict(batch_size=batch_size, drop_last=True, collate_fn=collator, num_workers=config.num_workers,
                          generator=torch.Generator().manual_seed(config.seed))
    if config.streaming:
        train_set = process_part(corpus["train"], config, accelerator, augmentation)
        train_loader = torch.utils.data.DataLoader(train_set, **loader_options)
    else:
        train_set = StudyTextDataset(corpus["train"], train=True, seed=config.seed, augmentation=augmentation)
        train_loader = torch.utils.data.DataLoader(train_set, sampler=EpochShuffleSampler(len(train_set), config.seed),
                                                   **loader_options)
    eval_loader = None
    if "validation" in corpus and len(corpus["validation"]) > 1:
        eval_loader = torch.utils.data.DataLoader(StudyTextDataset(corpus["validation"]),
                                                  batch_size=config.eval_batch_size, collate_fn=collator)

    configure_fsdp_wrapping(accelerator, model)
    optimizer = torch.optim.AdamW(parameter_groups(model, config.weight_decay), lr=config.learning_rate)
    model, optimizer = accelerator.prepare(model, optimizer)
    if not config.streaming:  # a stream is split over the processes already
        train_loader = accelerator.prepare(train_loader)
    if eval_loader is not None:
        eval_loader = accelerator.prepare(eval_loader)
    # Optimizer steps per process; Accelerate steps the scheduler once per process at every optimizer step.
    batches = train_studies // (batch_size * accelerator.num_processes) if config.streaming else len(train_loader)
    steps_per_epoch = max(1, math.ceil(batches / config.gradient_accumulation_steps))
    total_steps = config.max_steps or config.epochs * steps_per_epoch
    last_epoch = math.ceil(total_steps / steps_per_epoch)
    scheduler = get_cosine_schedule_with_warmup(
        optimizer,
        int(config.warmup_ratio * total_steps) * accelerator.num_processes,
        total_steps * accelerator.num_processes,
    )
    scheduler = accelerator.prepare(scheduler)
    unwrapped = accelerator.unwrap_model(model)

    state = resume_state(accelerator, config.output_dir, config.resume) if config.resume else new_state()
    if config.streaming and state["batches_in_epoch"]:
        train_set.load_state_dict(read_process_state(checkpoint_to_resume(config.output_dir, config.resume), accelerator))
    if accelerator.is_main_process and config.log_with:
        accelerator.init_trackers(f"cmr-clip-{config.task}", config={k: v for k, v in config.to_dict().items() if not isinstance(v, dict)})

    progress = tqdm(total=total_steps, initial=state["global_step"],
                    disable=not (config.progress and accelerator.is_local_main_process), desc="training")
    done = False
    for epoch in range(state["epoch"], last_epoch):
        train_set.set_epoch(epoch)
        if config.streaming:
            loader = batches_on_every_process(train_loader, accelerator)
        else:
            loader = train_loader
            if state["batches_in_epoch"]:
                loader = accelerator.skip_first_batches(train_loader, state["batches_in_epoch"])
            # Accelerate's loaders pass their own iteration count to the sampler; make it the epoch, also
            # on a loader made for resuming mid-epoch.
            loader.set_epoch(epoch)
        running = state["epoch_losses"]  # kept in checkpoints, so a resumed epoch reports the same mean loss
        for batch in loader:
            with accelerator.accumulate(model):
                loss = task.loss(model, unwrapped, batch)
                accelerator.backward(loss)
                if accelerator.sync_gradients and config.max_grad_norm:
                    accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            state["batches_in_epoch"] += 1
            running.append(loss.detach().float().item())
            if not accelerator.sync_gradients:
                continue
            state["global_step"] += 1
            progress.update(1)
            progress.set_postfix(loss=f"{running[-1]:.3f}")
            accelerator.log({"train/loss": running[-1], "train/lr": scheduler.get_last_lr()[0]},
                            step=state["global_step"])
            if config.checkpoint_every and state["global_step"] % config.checkpoint_every == 0:
                save_checkpoint(accelerator, config, state, train_set.state_dict() if config.streaming else None)
            if config.max_steps and state["global_step"] >= config.max_steps:
                done = True
                break
        record = {"epoch": epoch + 1, "step": state["global_step"],
                  "train_loss": float(np.mean(running)) if running else None}
        if eval_loader is not None:
            record.update(task.evaluate(model, eval_loader, accelerator))
        state["history"].append(record)
        accelerator.log({f"eval/{k}": v for k, v in record.items() if isinstance(v, float)}, step=state["global_step"])
        if accelerator.is_main_process:
            progress.write(format_epoch(record))
        state["epoch"], state["batches_in_epoch"], state["epoch_losses"] = epoch + 1, 0, []
        save_checkpoint(accelerator, config, state)
        if done:
            break
    progress.close()
    accelerator.wait_for_everyone()
    metrics = {"history": state["history"], "final": state["history"][-1] if state["history"] else {},
               "train_studies": train_studies, "config": config.to_dict()}
    state_dict = accelerator.get_state_dict(model)  # gathered from the shards under FSDP: every process takes part
    if accelerator.is_main_process:
        task.save(accelerator.unwrap_model(model), study_processor, metrics, state_dict)
    accelerator.end_training()
    return metrics


def format_epoch(record: dict) -> str:
    parts = [f"epoch {record['epoch']}", f"loss {record['train_loss']:.3f}" if record.get("train_loss") else ""]
    if "text_to_study_R@5" in record:
        parts.append(f"text->study R@1/5/10 {record['text_to_study_R@1']:.2f}/{record['text_to_study_R@5']:.2f}/"
                     f"{record['text_to_study_R@10']:.2f} (chance R@5 {record['chance_R@5']:.2f})")
    if "val_loss" in record:
        parts.append(f"val loss {record['val_loss']:.3f} (perplexity {record['val_perplexity']:.2f})")
    return "  ".join(p for p in parts if p)


def load_study_processor(data_dir: str):
    """The study processor the corpus was prepared with (its layout, image size and normalisation)."""
    from ..processing import CMRStudyProcessor

    path = Path(data_dir) / "study_processor"
    if not path.is_dir():
        raise FileNotFoundError(f"{data_dir} has no study_processor/; prepare the corpus with `cmr-clip prepare`.")
    return CMRStudyProcessor.from_pretrained(path)


def save_final(model: CMRCLIPModel, tokenizer, study_processor, config: TrainConfig, metrics: dict,
               state_dict: dict | None = None) -> None:
    """The trained model (`state_dict`: its full weights, when the model itself holds only a shard) and its
    processor (the corpus's study processor and the tokenizer), and metrics."""
    from ..processing import CMRCLIPProcessor

    out = Path(config.output_dir)
    model.save_pretrained(out, state_dict=state_dict)
    processor = CMRCLIPProcessor(feature_extractor=study_processor, tokenizer=tokenizer)
    processor.save_pretrained(out)
    write_json(out / "metrics.json", metrics)
    if config.push_to_hub:
        from ..hub import push

        push(out, config.push_to_hub, data_dir=config.data_dir)  # card, remote code, PHI guard (vocabulary vs. the corpus identities)
