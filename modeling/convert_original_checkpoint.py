"""Convert the authors' released CMR-CLIP checkpoint into a `CMRCLIPModel`, and check the conversion.

The command that fetches a release and writes a complete model directory is `cmr-clip convert-original`
(`cmr_clip.convert_cli`, `cmr_clip.release`); this module holds the conversion itself:

    model = convert("pytorch_model.bin", "config.json")           # or convert_state(state_dict, config_dict)
    record = conversion_check(model, load_original_state_dict("pytorch_model.bin"))

The original checkpoint is a state dict under the original module names (`video_model.*`,
`text_model.*`, `vid_proj.1.*`, `txt_proj.1.*`) and a config whose `video_params` may name an
architecture (`"arch_config": "base_patch16_224"`) instead of giving dimensions. Dimensions are read
from the tensors; the head count cannot be, so it comes from the config, the architecture name, or
the caller. `.bin` files are read with `torch.load(weights_only=True)`: no code is unpickled. Errors name
keys as the checkpoint names them (without a `module.` prefix). `conversion_check` compares the converted
model with `reference_forward`, an independent recomputation of the release's forward from the raw weights.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import AutoConfig
from transformers.initialization import no_init_weights

from .configuration_cmr_clip import CMRCLIPConfig, CMRCLIPVisionConfig
from .modeling_cmr_clip import CMRCLIPModel
from .reference_forward import reference_project, reference_text_features, reference_video_features

logger = logging.getLogger(__name__)

# Head counts of the timm ViT architectures the release may name; the tensors cannot tell them.
KNOWN_VIT_HEADS = {"tiny": 3, "small": 6, "base": 12, "large": 16, "huge": 16}

# The text encoder the release names; used when the config gives no BERT configuration.
RELEASE_TEXT_MODEL = "emilyalsentzer/Bio_ClinicalBERT"

_BLOCK_RENAMES = {
    "norm1": "space_layer_norm",
    "attn.qkv": "space_attn.qkv",
    "attn.proj": "space_attn.out_proj",
    "norm3": "time_layer_norm",
    "timeattn.qkv": "time_attn.qkv",
    "timeattn.proj": "time_attn.out_proj",
    "norm2": "mlp_layer_norm",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}
_BLOCK_KEY = re.compile(r"^video_model\.blocks\.(\d+)\.(.+)\.(weight|bias)$")
_TOP_RENAMES = {
    "video_model.patch_embed.proj.weight": "vision_model.embeddings.patch_embedding.weight",
    "video_model.patch_embed.proj.bias": "vision_model.embeddings.patch_embedding.bias",
    "video_model.norm.weight": "vision_model.post_layernorm.weight",
    "video_model.norm.bias": "vision_model.post_layernorm.bias",
    "vid_proj.1.weight": "visual_projection.1.weight",
    "vid_proj.1.bias": "visual_projection.1.bias",
    "txt_proj.1.weight": "text_projection.1.weight",
    "txt_proj.1.bias": "text_projection.1.bias",
}
# Embedding parameters stored with leading singleton dimensions in the original: new name, kept dims.
_SQUEEZED = {
    "video_model.cls_token": ("vision_model.embeddings.class_embedding", 1),
    "video_model.pos_embed": ("vision_model.embeddings.position_embedding", 2),
    "video_model.temporal_embed": ("vision_model.embeddings.temporal_embedding", 2),
}
# Buffers some `.bin` files carry that are not parameters of either model.
_IGNORED = re.compile(r"^text_model\.embeddings\.position_ids$")
# Our names back to the checkpoint's, so that errors name keys as the user's file has them.
_ORIGINAL_NAMES = {new: old for old, new in _TOP_RENAMES.items()} | {new: old for old, (new, _) in _SQUEEZED.items()}
_ORIGINAL_BLOCK_MODULES = {new: old for old, new in _BLOCK_RENAMES.items()}
_LAYER_KEY = re.compile(r"^vision_model\.encoder\.layers\.(\d+)\.(.+)\.(weight|bias)$")
# The tensors the model's dimensions are read from.
REQUIRED_KEYS = ("video_model.patch_embed.proj.weight", "video_model.pos_embed", "video_model.temporal_embed",
                 "video_model.blocks.0.mlp.fc1.weight", "vid_proj.1.weight")

# Files a conversion writes beside the model: the check's figures and where the weights came from.
CONVERSION_CHECK_FILE = "conversion_check.json"
PROVENANCE_FILE = "provenance.json"
# The spec's equivalence bound (absolute, float32) for every checked output.
CHECK_TOLERANCE = 1e-4
# Frames of the check's synthetic videos: enough to exercise time attention, few enough for a ViT-B on a CPU.
CHECK_FRAMES = 8


class CheckpointMismatchError(ValueError):
    """The checkpoint's keys or shapes do not match the model it should fill."""


class ConversionCheckError(ValueError):
    """The converted model does not compute what the source weights compute."""


def load_original_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a `.bin` (with `weights_only=True`) or `.safetensors` state dict, unwrapping `state_dict`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint {path.name} does not exist.")
    if path.suffix == ".safetensors":
        state_dict = load_file(str(path))
    else:
        try:
            state_dict = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - re-raised with the file named and the reason
            raise CheckpointMismatchError(
                f"{path.name} could not be read as a weights-only PyTorch state dict ({err}). Only plain tensors "
                "are accepted; a file that needs code to unpickle is refused on purpose."
            ) from err
        if isinstance(state_dict, dict) and "state_dict" in state_dict and isinstance(state_dict["state_dict"], dict):
            state_dict = state_dict["state_dict"]
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise CheckpointMismatchError(f"{path.name} does not hold a state dict of tensors.")
    # Checkpoints saved from DataParallel prefix every key with "module.".
    return {k.removeprefix("module."): v for k, v in state_dict.items()}


def rename_key(key: str) -> str | None:
    """The name of an original key in `CMRCLIPModel`, or None for keys that are dropped."""
    if _IGNORED.match(key):
        return None
    if key in _TOP_RENAMES:
        return _TOP_RENAMES[key]
    if key in _SQUEEZED:
        return _SQUEEZED[key][0]
    if key.startswith("text_model."):
        return key
    match = _BLOCK_KEY.match(key)
    if match and match.group(2) in _BLOCK_RENAMES:
        index, module, kind = match.groups()
        return f"vision_model.encoder.layers.{index}.{_BLOCK_RENAMES[module]}.{kind}"
    return key  # unknown keys keep their name and are reported as unexpected


def original_key(key: str) -> str:
    """The checkpoint's name for a `CMRCLIPModel` key (the inverse of `rename_key`)."""
    if key in _ORIGINAL_NAMES:
        return _ORIGINAL_NAMES[key]
    match = _LAYER_KEY.match(key)
    if match and match.group(2) in _ORIGINAL_BLOCK_MODULES:
        index, module, kind = match.groups()
        return f"video_model.blocks.{index}.{_ORIGINAL_BLOCK_MODULES[module]}.{kind}"
    return key


def convert_state_dict(original: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    converted = {}
    for key, tensor in original.items():
        new_key = rename_key(key)
        if new_key is None:
            continue
        if key in _SQUEEZED:
            kept_dims = _SQUEEZED[key][1]
            tensor = tensor.reshape(tensor.shape[-kept_dims:])
        converted[new_key] = tensor
    return converted


def infer_vision_config(original: dict[str, torch.Tensor], video_params: dict, num_heads: int | None) -> CMRCLIPVisionConfig:
    """Dimensions from tensor shapes; the head count from the config, the architecture name or the caller."""
    patch_weight = original["video_model.patch_embed.proj.weight"]
    hidden_size, channels, patch_size, _ = patch_weight.shape
    num_patches = original["video_model.pos_embed"].shape[-2] - 1
    grid = int(round(num_patches**0.5))
    if grid * grid != num_patches:
        raise CheckpointMismatchError(f"video_model.pos_embed has {num_patches} patch positions, not a square grid.")
    depth = 1 + max(int(m.group(1)) for k in original if (m := _BLOCK_KEY.match(k)))
    heads = num_heads or video_params.get("num_heads")
    if heads is None:
        arch = str(video_params.get("arch_config", ""))
        size = arch.split("_")[0]
        if size not in KNOWN_VIT_HEADS:
            raise CheckpointMismatchError(
                f"The number of attention heads cannot be read from the weights and the config's "
                f"arch_config {arch!r} does not name it; pass --num-heads (ViT-B uses 12)."
            )
        heads = KNOWN_VIT_HEADS[size]
    return CMRCLIPVisionConfig(
        image_size=grid * patch_size,
        patch_size=patch_size,
        num_channels=channels,
        num_frames=original["video_model.temporal_embed"].shape[-2],
        hidden_size=hidden_size,
        num_hidden_layers=depth,
        num_attention_heads=int(heads),
        intermediate_size=original["video_model.blocks.0.mlp.fc1.weight"].shape[0],
        layer_norm_eps=float(video_params.get("layer_norm_eps", 1e-6)),
        qkv_bias="video_model.blocks.0.attn.qkv.bias" in original,
    )


def resolve_text_config(original_config: dict, text_config_path: str | None, text_model: str | None):
    """The text encoder's config: an explicit file, the config's embedded `bert_config`, or the config of
    the text model (a local directory or a Hub name: `text_model`, else the one the config names)."""
    if text_config_path:
        return AutoConfig.from_pretrained(text_config_path)
    text_params = original_config.get("text_params", {})
    if "bert_config" in text_params:
        fields = dict(text_params["bert_config"])
        fields.pop("transformers_version", None)
        return AutoConfig.for_model(fields.pop("model_type", "bert"), **fields)
    name = text_model or text_params.get("model") or RELEASE_TEXT_MODEL
    try:
        return AutoConfig.from_pretrained(name)
    except (OSError, ValueError) as err:
        raise CheckpointMismatchError(
            f"The text encoder's configuration ({name!r}) could not be loaded: {err}. Pass --text-config "
            "with its config.json, or --tokenizer with a local copy of the text model's directory."
        ) from err


def text_pooling_for(text_model_name: str) -> str:
    """The release chooses pooling by the text checkpoint's name."""
    name = text_model_name.lower().split("/")[-1]
    if name.startswith("distilbert"):
        return "cls"
    if "bert" in name:
        return "mean"
    return "pooler"


def build_config(
    original: dict[str, torch.Tensor],
    original_config: dict,
    text_config_path: str | None = None,
    text_model: str | None = None,
    num_heads: int | None = None,
) -> CMRCLIPConfig:
    video_params = original_config.get("video_params", {})
    text_params = original_config.get("text_params", {})
    vision_config = infer_vision_config(original, video_params, num_heads)
    text_config = resolve_text_config(original_config, text_config_path, text_model)
    pooling = text_params.get("pooling") or text_pooling_for(text_params.get("model", RELEASE_TEXT_MODEL))
    projection = original_config.get("projection", "minimal")
    if projection != "minimal":
        raise CheckpointMismatchError(f"Only the release's 'minimal' projection is supported, not {projection!r}.")
    return CMRCLIPConfig(
        vision_config=vision_config,
        text_config=text_config,
        projection_dim=original["vid_proj.1.weight"].shape[0],
        text_pooling=pooling,
        projection_type="minimal",
        temperature=0.05,
        max_text_length=min(512, getattr(text_config, "max_position_embeddings", 512)),
    )


def check_against_model(converted: dict[str, torch.Tensor], model: CMRCLIPModel) -> list[str]:
    """Raise `CheckpointMismatchError` listing missing, unexpected and mis-shaped keys. Returns the keys
    that are dropped on purpose (an unused text pooler)."""
    expected = {k: v.shape for k, v in model.state_dict().items()}
    dropped = [k for k in converted if k.startswith("text_model.pooler.") and k not in expected]
    missing = sorted(original_key(k) for k in set(expected) - set(converted))
    unexpected = sorted(original_key(k) for k in set(converted) - set(expected) - set(dropped))
    mismatched = sorted(
        f"{original_key(k)}: checkpoint {tuple(converted[k].shape)} vs model {tuple(expected[k])}"
        for k in set(converted) & set(expected)
        if tuple(converted[k].shape) != tuple(expected[k])
    )
    if missing or unexpected or mismatched:
        lines = ["The checkpoint does not match CMR-CLIP (keys as the checkpoint names them):"]
        for title, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
            if keys:
                lines.append(f"  {title} ({len(keys)}): " + ", ".join(keys[:20]) + (" ..." if len(keys) > 20 else ""))
        raise CheckpointMismatchError("\n".join(lines))
    return dropped


def convert(
    checkpoint: str | Path,
    config: str | Path | dict,
    text_config: str | None = None,
    text_model: str | None = None,
    num_heads: int | None = None,
) -> CMRCLIPModel:
    """Build a `CMRCLIPModel` holding the original checkpoint's weights (a `.bin` or `.safetensors` file)."""
    original_config = config if isinstance(config, dict) else json.loads(Path(config).read_text())
    return convert_state(load_original_state_dict(checkpoint), original_config, text_config, text_model, num_heads)


def convert_state(
    original: dict[str, torch.Tensor],
    original_config: dict,
    text_config: str | None = None,
    text_model: str | None = None,
    num_heads: int | None = None,
) -> CMRCLIPModel:
    """`convert` for a state dict already loaded (original key names, no `module.` prefix)."""
    absent = [key for key in REQUIRED_KEYS if key not in original]
    if absent:
        raise CheckpointMismatchError(
            f"The checkpoint has no {', '.join(map(repr, absent))}: it is not a CMR-CLIP checkpoint (or those keys "
            "were renamed)."
        )
    model_config = build_config(original, original_config, text_config, text_model, num_heads)
    with no_init_weights():  # every parameter is overwritten below; buffers are built as usual
        model = CMRCLIPModel(model_config)
    converted = convert_state_dict(original)
    dropped = check_against_model(converted, model)
    if dropped:
        logger.warning("Dropping %s: mean text pooling does not use the BERT pooler.", ", ".join(dropped))
    for key in dropped:
        converted.pop(key)
    model.load_state_dict(converted, strict=True)
    return model.eval()


def check_inputs(config: CMRCLIPConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """The check's fixed synthetic input: two videos of `CHECK_FRAMES` frames (fewer if the model takes fewer) and
    three token sequences of different lengths, padded, drawn from a seeded generator."""
    generator = torch.Generator().manual_seed(seed)
    vision = config.vision_config
    frames = min(CHECK_FRAMES, vision.num_frames)
    pixels = torch.randn(2, frames, vision.num_channels, vision.image_size, vision.image_size, generator=generator)
    length = min(16, config.text_config.max_position_embeddings)
    ids = torch.randint(1, config.text_config.vocab_size, (3, length), generator=generator)
    mask = (torch.arange(length)[None] < torch.tensor([length, length * 2 // 3, length // 3])[:, None]).long()
    return {"pixel_values_videos": pixels, "input_ids": ids * mask, "attention_mask": mask}


@torch.no_grad()
def conversion_check(model: CMRCLIPModel, original: dict[str, torch.Tensor], seed: int = 0) -> dict:
    """Run `model` (float32) and the independent float64 recomputation from the original weights
    (`reference_forward`) on `check_inputs`; the maximum absolute difference of the video tower's CLS features,
    both embeddings and the text-to-video cosine matrix, per output and overall, and whether all are within
    `CHECK_TOLERANCE`."""
    inputs = check_inputs(model.config, seed)
    pixels, ids, mask = inputs["pixel_values_videos"], inputs["input_ids"], inputs["attention_mask"]
    model = model.float().eval()
    ours = {
        "video_features": model.vision_model(pixel_values_videos=pixels).pooler_output,
        "video_embeds": model.get_video_features(pixel_values_videos=pixels).pooler_output,
        "text_embeds": model.get_text_features(input_ids=ids, attention_mask=mask).pooler_output,
    }
    text_config = model.config.text_config
    video_features = reference_video_features(original, pixels.double(), model.config.vision_config.num_attention_heads)
    text_features = reference_text_features(original, ids, mask, text_config.num_attention_heads,
                                            eps=text_config.layer_norm_eps, pooling=model.config.text_pooling,
                                            max_length=model.config.max_text_length)
    video_embeds, text_embeds = reference_project(original, video_features, text_features)
    reference = {"video_features": video_features, "video_embeds": video_embeds, "text_embeds": text_embeds}
    ours["text_to_video_cosine"] = _cosine(ours["text_embeds"], ours["video_embeds"])
    reference["text_to_video_cosine"] = _cosine(text_embeds, video_embeds)
    differences = {name: float((ours[name].double() - reference[name]).abs().max()) for name in reference}
    largest = max(differences.values())
    return {
        "max_abs_difference": largest,
        "per_output": differences,
        "tolerance": CHECK_TOLERANCE,
        "passed": largest <= CHECK_TOLERANCE,
        "input": {"videos": list(pixels.shape), "texts": list(ids.shape), "seed": seed,
                  "description": "standard-normal pixels and random token ids from a seeded torch generator"},
        "reference": "the release's forward recomputed from the original state dict in float64 "
                     "(cmr_clip.modeling.reference_forward); the converted model runs in float32",
    }


def _cosine(text: torch.Tensor, video: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(text, dim=-1) @ torch.nn.functional.normalize(video, dim=-1).T


if __name__ == "__main__":
    # The command moved to `cmr-clip convert-original` (modeling/ holds no CLI); this entry point forwards to it.
    import sys
    import warnings

    # Through the command router, which loads commands by name: modeling/ imports nothing above it.
    from cmr_clip.cli import main

    warnings.warn("`python -m cmr_clip.modeling.convert_original_checkpoint` is deprecated; use "
                  "`cmr-clip convert-original`.", FutureWarning, stacklevel=1)
    raise SystemExit(main(["convert-original", *sys.argv[1:]]))
