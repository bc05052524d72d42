"""The one training loop, on Accelerate: one CPU to many GPUs, mixed precision, gradient accumulation,
checkpoints that resume to the same weights, per-epoch evaluation. What is trained, on which data, and how
it is scored and saved is the task's (`Task`; the tasks are in `training.tasks`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, PartialState
from accelerate.utils import DistributedType, set_seed
from tqdm.auto import tqdm
from transformers import get_cosine_schedule_with_warmup

from ..data.collate import StudyCollator
from ..data.streaming import batches_on_every_process
from ..precision import training_mixed_precision, use_onednn_linear
from ..privacy import check_json
from .checkpointing import (
    checkpoint_to_resume,
    configure_fsdp_wrapping,
    new_state,
    read_process_state,
    resume_state,
    save_checkpoint,
)
from .config import RunConfig


@dataclass
class TrainData:
    """A task's training studies: `dataset` (with `set_epoch`), their number, and how they are drawn."""

    dataset: torch.utils.data.Dataset
    studies: int
    """Training studies (a stream's: its number of shards, one study each)."""
    sampler: torch.utils.data.Sampler | None = None
    """An order that depends only on (seed, epoch); None: `dataset` is a stream, already split over the
    processes, that keeps its own position for checkpoints (`state_dict`, `load_state_dict`)."""
    drop_last: bool = False


class Task(Protocol):
    """What the loop runs. `build` also sets `collator`, the batches' `StudyCollator`."""

    name: str
    config: RunConfig
    collator: StudyCollator

    def open_corpus(self) -> tuple[dict, object]:
        """The corpus splits and the study processor they were prepared with."""

    def build(self, corpus, study_processor) -> torch.nn.Module:
        """The model to train, in training mode."""

    def train_data(self, corpus, accelerator: Accelerator) -> TrainData:
        """The training studies and their order."""

    def eval_loaders(self, corpus) -> dict[str, torch.utils.data.DataLoader]:
        """Evaluation loaders by split name; the loop prepares them with the model."""

    def loss(self, model, unwrapped, batch) -> torch.Tensor:
        """The batch's loss (`model`: prepared by Accelerate, `unwrapped`: the model itself)."""

    def evaluate(self, model, loaders: dict, accelerator: Accelerator) -> dict[str, float]:
        """Figures added to each epoch's record."""

    def results(self, model, loaders: dict, accelerator: Accelerator, summary: dict) -> dict:
        """The run's metrics, from `summary` (history, final record, training studies, config)."""

    def save(self, model, study_processor, metrics: dict, state_dict: dict) -> None:
        """Write the trained model (`state_dict`: its full weights, gathered from shards) and `metrics`."""


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


def _forget_earlier_precision(mixed_precision: str) -> None:
    """Accelerate keeps one mixed-precision setting per process and refuses another ("AcceleratorState has
    already been initialized"). A run after another in one single process (a notebook that trains in float32,
    then fine-tunes in bf16) starts from a fresh state; under a launcher each process runs one setting, and
    Accelerate's check stands."""
    earlier = AcceleratorState._shared_state.get("_mixed_precision")
    if earlier is not None and earlier != mixed_precision and PartialState._shared_state.get("num_processes", 1) == 1:
        AcceleratorState._reset_state()


def run(task: Task) -> dict:
    """Train `task.config`'s run; returns the task's metrics (also in `output_dir/metrics.json`)."""
    config = task.config
    # The configuration goes into metrics.json, which the privacy guard checks when the run ends: check it
    # now, so that a path naming someone stops the run before it trains rather than after.
    check_json(config.to_dict(), "metrics.json", "config", local=True)
    if config.eval_every < 1:
        raise ValueError(f"eval_every must be 1 or more (evaluate every N epochs), got {config.eval_every}")
    on_cpu = not torch.accelerator.is_available()
    mixed_precision, why = training_mixed_precision(config.mixed_precision, "cpu" if on_cpu else "cuda")
    if config.progress:
        tqdm.write(f"training precision: {'float32' if mixed_precision == 'no' else mixed_precision} ({why})")
    _forget_earlier_precision(mixed_precision)
    accelerator = Accelerator(
        # Without a GPU, Accelerate only joins the processes a launcher started (torchrun) when told to use the CPU.
        cpu=on_cpu,
        mixed_precision=mixed_precision,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        log_with=config.log_with,
        project_dir=config.output_dir,
    )
    set_seed(config.seed)
    corpus, study_processor = task.open_corpus()
    model = task.build(corpus, study_processor)
    onednn_layers = 0
    if config.onednn_linear and on_cpu:
        if accelerator.distributed_type == DistributedType.FSDP:
            raise ValueError("onednn_linear routes plain Linear layers; FSDP shards them: train without one of the two.")
        onednn_layers, onednn_why = use_onednn_linear(model, "auto")
        if config.progress:
            tqdm.write(f"float32 linear layers through oneDNN: {onednn_layers} ({onednn_why})")
    if config.gradient_checkpointing:
        model.activation_checkpointing_enable()

    data = task.train_data(corpus, accelerator)
    streaming = data.sampler is None
    batch_size = min(config.batch_size, data.studies)
    # The loader's own generator keeps its per-epoch seed draw off the global RNG, whose state a checkpoint
    # restores: a resumed run then draws the same dropout masks as an uninterrupted one.
    train_loader = torch.utils.data.DataLoader(
        data.dataset, sampler=data.sampler, batch_size=batch_size, drop_last=data.drop_last,
        collate_fn=task.collator, num_workers=config.num_workers, generator=torch.Generator().manual_seed(config.seed))
    eval_loaders = task.eval_loaders(corpus)

    configure_fsdp_wrapping(accelerator, model)
    optimizer = torch.optim.AdamW(parameter_groups(model, config.weight_decay), lr=config.learning_rate)
    model, optimizer = accelerator.prepare(model, optimizer)
    if not streaming:  # a stream is split over the processes already
        train_loader = accelerator.prepare(train_loader)
    eval_loaders = {name: accelerator.prepare(loader) for name, loader in eval_loaders.items()}
    # Optimizer steps per process; Accelerate steps the scheduler once per process at every optimizer step.
    batches = data.studies // (batch_size * accelerator.num_processes) if streaming else len(train_loader)
    steps_per_epoch = max(1, math.ceil(batches / config.gradient_accumulation_steps))
    total_steps = config.max_steps or config.epochs * steps_per_epoch
    scheduler = accelerator.prepare(get_cosine_schedule_with_warmup(
        optimizer,
        int(config.warmup_ratio * total_steps) * accelerator.num_processes,
        total_steps * accelerator.num_processes,
    ))
    unwrapped = accelerator.unwrap_model(model)

    state = resume_state(accelerator, config.output_dir, config.resume) if config.resume else new_state()
    if streaming and state["batches_in_epoch"]:
        data.dataset.load_state_dict(read_process_state(checkpoint_to_resume(config.output_dir, config.resume),
                                                        accelerator))
    if accelerator.is_main_process and config.log_with:
        accelerator.init_trackers(f"cmr-clip-{task.name}",
                                  config={k: v for k, v in config.to_dict().items() if not isinstance(v, dict)})

    progress = tqdm(total=total_steps, initial=state["global_step"],
                    disable=not (config.progress and accelerator.is_local_main_process), desc="training")
    for epoch in range(state["epoch"], math.ceil(total_steps / steps_per_epoch)):
        data.dataset.set_epoch(epoch)
        if streaming:
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
                if streaming:  # mid-epoch, a stream's position is its own on every process
                    save_checkpoint(accelerator, config, state, data.dataset.state_dict())
                else:
                    save_checkpoint(accelerator, config, state)
            if state["global_step"] >= total_steps:
                break
        record = {"epoch": epoch + 1, "step": state["global_step"],
                  "train_loss": float(np.mean(running)) if running else None}
        if (epoch + 1) % config.eval_every == 0 or state["global_step"] >= total_steps:
            # Evaluation leaves the random state as it found it (a data loader draws its base seed from the
            # global generator on every pass), so the weights do not depend on how often a run evaluates.
            with torch.random.fork_rng(devices=[] if accelerator.device.type == "cpu" else [accelerator.device],
                                       device_type=accelerator.device.type):
                record.update(task.evaluate(model, eval_loaders, accelerator))
        state["history"].append(record)
        accelerator.log({f"eval/{k}": v for k, v in record.items() if isinstance(v, float)}, step=state["global_step"])
        if accelerator.is_main_process:
            progress.write(format_epoch(record))
        state["epoch"], state["batches_in_epoch"], state["epoch_losses"] = epoch + 1, 0, []
        save_checkpoint(accelerator, config, state)
        if state["global_step"] >= total_steps:
            break
    progress.close()
    accelerator.wait_for_everyone()
    summary = {"history": state["history"], "final": state["history"][-1] if state["history"] else {},
               "train_studies": data.studies, "mixed_precision": mixed_precision, "mixed_precision_reason": why,
               "onednn_linear_layers": onednn_layers,
               "config": config.to_dict()}
    metrics = task.results(model, eval_loaders, accelerator, summary)
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
