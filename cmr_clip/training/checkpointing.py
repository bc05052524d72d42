"""Checkpoints of the training loop: `accelerator.save_state` written atomically under
`output_dir/checkpoints/step-*` with the loop's position (`trainer_state.json`), found again and loaded to
resume; each process's own position in a streamed corpus; and, for sharded (FSDP2) training, which layers
become shard units. The final `save_pretrained` takes the full model gathered from the shards
(`accelerator.get_state_dict`).

Mid-run checkpoints need nothing here: `accelerator.save_state` writes FSDP's sharded state dicts (the
plugin's `state_dict_type`, `SHARDED_STATE_DICT` in `examples/accelerate_fsdp.yaml`) and `load_state`
reads them back.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import torch
from accelerate import Accelerator

logger = logging.getLogger(__name__)

STATE_FILE = "trainer_state.json"
CHECKPOINTS = "checkpoints"


def fsdp_layers_to_wrap(model: torch.nn.Module) -> list[str]:
    """The shard units of `model`: the classes its `_no_split_modules` names (transformers collects them
    over every tower and decoder it holds) that the model has, except those holding the input embedding.

    Accelerate shards the input embedding as a unit of its own after the policy's units; a policy unit
    around it (BERT's `BertEmbeddings`) would shard those weights twice, which fails inside
    `fully_shard` ("Invariant encountered: value was None")."""
    present = {type(module).__name__: module for module in model.modules()}
    names = [name for name in sorted(set(model._no_split_modules or ())) if name in present]
    embedding = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if embedding is None:
        return names
    return [name for name in names
            if not any(sub is embedding for module in model.modules() if type(module).__name__ == name
                       for sub in module.modules())]


def configure_fsdp_wrapping(accelerator: Accelerator, model: torch.nn.Module) -> None:
    """Before `accelerator.prepare`: an FSDP2 run with a transformer-based wrap policy and no explicit
    layer list wraps `fsdp_layers_to_wrap(model)`; an explicit list in the Accelerate config is kept."""
    plugin = getattr(accelerator.state, "fsdp_plugin", None)
    if not accelerator.is_fsdp2 or plugin is None or plugin.transformer_cls_names_to_wrap is not None:
        return
    plugin.transformer_cls_names_to_wrap = fsdp_layers_to_wrap(model)


def process_state_file(checkpoint: Path, accelerator: Accelerator) -> Path:
    return Path(checkpoint) / f"process_state_{accelerator.process_index}.json"


def write_process_state(checkpoint: Path, accelerator: Accelerator, state: dict) -> None:
    """This process's own state (its stream's position: every process reads other studies) in `checkpoint`."""
    process_state_file(checkpoint, accelerator).write_text(json.dumps(state))


def read_process_state(checkpoint: Path, accelerator: Accelerator) -> dict:
    path = process_state_file(checkpoint, accelerator)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {Path(checkpoint).name} has no position for process "
                                f"{accelerator.process_index}: resume with the number of processes that saved it.")
    return json.loads(path.read_text())


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
    configuration with `output_dir` and `save_total_limit` (a `RunConfig`).
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
