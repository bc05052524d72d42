"""Checkpoint pieces beyond `accelerator.save_state`: each process's own position in a streamed corpus,
and, for sharded (FSDP2) training, which layers become shard units. The final `save_pretrained` takes the
full model gathered from the shards (`accelerator.get_state_dict`).

Mid-run checkpoints need nothing here: `accelerator.save_state` writes FSDP's sharded state dicts (the
plugin's `state_dict_type`, `SHARDED_STATE_DICT` in `examples/accelerate_fsdp.yaml`) and `load_state`
reads them back.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from accelerate import Accelerator


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
