"""The one place a CMR-CLIP model runs over many studies or texts.

Training's validation, evaluation, the demo, the study index and the zero-shot pipeline all take their
embeddings from here, so that a study is embedded the same way wherever it is scored:

- `encode_videos(model, pixel_values_videos)`: study embeddings of a batch of pixel values;
- `encode_texts(model, tokenizer, texts)`: text embeddings of a list of strings, in batches;
- `encode_frames(model, study_processor, frames)`: study embeddings of uint8 frames (N, T, H, W), normalised
  by the study processor, in batches (evaluation's perturbed studies);
- `embed_batches(model, batches, accelerator=None)`: study and impression embeddings of collated batches,
  gathered across processes when an `accelerate.Accelerator` is given (training's validation);
- `embed_split(model, processor, split)`: study and impression embeddings of a prepared corpus split, with
  the middle frame of every slot as at evaluation.

Pixel values are cast to the model's dtype (a bfloat16 model takes bfloat16 frames); every embedding comes
back L2-normalised, as float32 and in input order.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from tqdm.auto import tqdm

from .data.collate import ImpressionTokenizer, StudyCollator
from .data.dataset import StudyTextDataset


def _device(model) -> torch.device:
    return next(model.parameters()).device


def _dtype(model) -> torch.dtype:
    return next(model.parameters()).dtype


@torch.no_grad()
def encode_videos(model, pixel_values_videos: torch.Tensor) -> torch.Tensor:
    """L2-normalised study embeddings (N, D) from `pixel_values_videos` (N, T, 3, H, W), moved to the model's
    device and dtype."""
    pixels = pixel_values_videos.to(_device(model), _dtype(model))
    features = model.get_video_features(pixel_values_videos=pixels)
    return torch.nn.functional.normalize(features.pooler_output.float(), dim=-1)


@torch.no_grad()
def encode_texts(model, tokenizer, texts: list[str], batch_size: int = 64) -> torch.Tensor:
    """L2-normalised text embeddings (N, D) of `texts`, in order, `batch_size` at a time."""
    encode = ImpressionTokenizer(tokenizer, model.config.max_text_length)
    device = _device(model)
    chunks = [torch.zeros(0, model.config.projection_dim, device=device)]  # no texts embed to (0, D)
    for start in range(0, len(texts), batch_size):
        tokens = {name: tensor.to(device) for name, tensor in encode(texts[start:start + batch_size]).items()}
        features = model.get_text_features(**tokens)
        chunks.append(torch.nn.functional.normalize(features.pooler_output.float(), dim=-1))
    return torch.cat(chunks)


def encode_frames(model, study_processor, frames: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
    """L2-normalised study embeddings (N, D), on the CPU, of uint8 `frames` (N, T, H, W) turned into pixel
    values by `study_processor.normalise`, `batch_size` studies at a time."""
    chunks = [torch.zeros(0, model.config.projection_dim)]  # no studies embed to (0, D)
    for start in range(0, len(frames), batch_size):
        pixels = study_processor.normalise(frames[start:start + batch_size])
        chunks.append(encode_videos(model, pixels).cpu())
    return torch.cat(chunks)


@torch.no_grad()
def embed_batches(model, batches: Iterable[dict], accelerator=None, progress: bool = False) -> dict[str, torch.Tensor]:
    """`video` and `text` embeddings (N, D) of collated study-impression batches (`StudyCollator` with an
    `ImpressionTokenizer`), on the CPU.

    With `accelerator`, `model` and the loader are Accelerate's (wrapped for DDP or FSDP, each process
    holding part of the batches): the model's forward runs on every process and the embeddings are
    gathered, without the duplicates Accelerate pads the last batch with. Without it, batches are moved to
    the model's device, pixel values in the model's dtype. The model is put in eval mode and back in the mode
    it was in.
    """
    training = model.training
    model.eval()
    device = None if accelerator is not None else _device(model)
    dtype = None if accelerator is not None else _dtype(model)
    videos, texts = [], []
    for batch in tqdm(batches, desc="embedding studies", disable=not progress):
        inputs = {name: batch[name] for name in ("pixel_values_videos", "input_ids", "attention_mask")}
        if device is not None:
            inputs = {name: tensor.to(device, dtype) if tensor.is_floating_point() else tensor.to(device)
                      for name, tensor in inputs.items()}
        out = model(**inputs)
        video, text = out.video_embeds.float().contiguous(), out.text_embeds.float().contiguous()
        if accelerator is not None:
            video, text = accelerator.gather_for_metrics(video), accelerator.gather_for_metrics(text)
        videos.append(video.cpu())
        texts.append(text.cpu())
    model.train(training)
    if videos:
        return {"video": torch.cat(videos), "text": torch.cat(texts)}
    # An empty split embeds to (0, D); a DDP or FSDP wrapper has no config of its own.
    unwrapped = accelerator.unwrap_model(model) if accelerator is not None else model
    width = unwrapped.config.projection_dim if hasattr(unwrapped, "config") else 0
    return {"video": torch.zeros(0, width), "text": torch.zeros(0, width)}


def embed_split(model, processor, split, batch_size: int = 32, progress: bool = False) -> dict[str, torch.Tensor]:
    """`video` and `text` (impression) embeddings (N, D) of every study of a prepared split, in row order, with
    the middle frame of every slot; `processor` is the model's `CMRCLIPProcessor`."""
    collate = StudyCollator(processor.feature_extractor, ImpressionTokenizer(processor.tokenizer, model.config.max_text_length))
    loader = torch.utils.data.DataLoader(StudyTextDataset(split), batch_size=batch_size, collate_fn=collate)
    return embed_batches(model, loader, progress=progress)
