"""Reading a CMR-CLIP training epoch's studies, the part of an epoch outside the model: one epoch of a prepared
corpus through `StudyTextDataset` (slot draws, the demo's crop augmentation and sentence sampling) with the
zero-copy Arrow reads against `datasets`' row access (`zero_copy=False`, the way it was read before), in one
run. The corpus is written to disk and memory-mapped back, as `cmr-clip prepare` leaves it.

Measured here too, and not adopted: AdamW's fused CPU kernel against torch's default one-tensor-at-a-time update
(`--optimizer`). It is several times faster a step, but a few seconds of the demo's training, and its different
rounding sends the seeded demo down another path (see the README's note on how far its figures move).

    python benchmarks/training_overheads.py                  # the demo's corpus size and model
    python benchmarks/training_overheads.py --studies 40 --repeats 1
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from datasets import Array2D, Array3D, Dataset, Features, Value, load_from_disk

from cmr_clip import CMRCLIPConfig, CMRCLIPModel
from cmr_clip.data.augment import Augmentation
from cmr_clip.data.dataset import StudyTextDataset
from cmr_clip.demo import DEMO_TEXT, DEMO_VISION
from cmr_clip.training.loop import parameter_groups


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=277, help="training studies (the demo's training split: 277)")
    parser.add_argument("--candidates", type=int, default=68, help="candidate frames per study (the demo's: about 68)")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--num-frames", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats of each measurement (median)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--optimizer", action="store_true", help="also time AdamW, fused against the default")
    return parser.parse_args(argv)


def write_corpus(folder: Path, args: argparse.Namespace) -> Dataset:
    """A prepared-corpus split of random studies, saved and memory-mapped back."""
    rng = np.random.default_rng(0)
    size, frames = args.image_size, args.num_frames
    features = Features({"frames": Array3D(shape=(None, size, size), dtype="uint8"),
                         "slots": Array2D(shape=(frames, 2), dtype="int32"), "impression": Value("string")})

    def studies():
        for _ in range(args.studies):
            length = int(rng.integers(args.candidates - 8, args.candidates + 9))
            bounds = np.linspace(0, length, frames + 1).astype(np.int32)
            yield {"frames": rng.integers(0, 256, (length, size, size), dtype=np.uint8),
                   "slots": np.stack([bounds[:-1], bounds[1:]], 1),
                   "impression": "Normal LV size and function. No LGE. No pericardial effusion. LVEF 61%."}

    Dataset.from_generator(studies, features=features).save_to_disk(str(folder))
    return load_from_disk(str(folder))


def time_epoch(split: Dataset, zero_copy: bool, repeats: int) -> float:
    augmentation = Augmentation(scale=(0.8, 1.0), flip=0.0, sentence_keep=0.5)  # the demo's
    dataset = StudyTextDataset(split, train=True, seed=0, augmentation=augmentation, zero_copy=zero_copy)
    times = []
    for epoch in range(repeats):
        dataset.set_epoch(epoch)
        begin = time.perf_counter()
        for index in range(len(dataset)):
            dataset[index]
        times.append(time.perf_counter() - begin)
    return statistics.median(times)


def time_adamw(fused: bool, repeats: int, image_size: int, num_frames: int) -> tuple[float, int]:
    config = CMRCLIPConfig(vision_config=dict(image_size=image_size, num_frames=num_frames, **DEMO_VISION),
                           text_config=dict(DEMO_TEXT, vocab_size=1000), projection_dim=64)
    model = CMRCLIPModel(config)
    for param in model.parameters():
        param.grad = torch.randn_like(param)
    optimizer = torch.optim.AdamW(parameter_groups(model, 0.01), lr=1e-3, fused=fused or None)
    for _ in range(3):
        optimizer.step()
    times = []
    for _ in range(repeats):
        begin = time.perf_counter()
        for _ in range(20):
            optimizer.step()
        times.append((time.perf_counter() - begin) / 20)
    return statistics.median(times), sum(p.numel() for p in model.parameters())


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as folder:
        split = write_corpus(Path(folder) / "train", args)
        rows = time_epoch(split, zero_copy=False, repeats=args.repeats)
        arrow = time_epoch(split, zero_copy=True, repeats=args.repeats)
    print(f"Training overheads, {args.threads} threads, median of {args.repeats}")
    print(f"{'what':<64}{'baseline':>12}{'ours':>12}{'speed-up':>10}")
    print(f"{f'reading {args.studies} studies for an epoch (s): datasets rows -> zero-copy':<64}"
          f"{rows:>12.3f}{arrow:>12.3f}{rows / arrow:>9.2f}x")
    if args.optimizer:
        loop, parameters = time_adamw(False, args.repeats, args.image_size, args.num_frames)
        fused, _ = time_adamw(True, args.repeats, args.image_size, args.num_frames)
        print(f"{f'AdamW step, {parameters / 1e6:.2f}M parameters (ms): for-loop -> fused (not used)':<64}"
              f"{loop * 1e3:>12.2f}{fused * 1e3:>12.2f}{loop / fused:>9.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
