"""Study processor speed: ours (header pass, decode only the selected frames) against reading every file.

Writes full-size synthetic studies (one per vendor style) and times, in the same run:

- ours: `read_study` (headers only, no pixels) + `CMRStudyProcessor(layout="reference")`, split into the
  header scan, the split by study, its checks and the grouping/classification, decoding the selected frames
  (with the bad-frame fallback), and windowing + resize/normalise;
- baseline: every file read with its pixels (`pydicom.dcmread` + `pixel_array`), frames grouped by series and
  sorted by position and trigger time, then the same frames as ours transformed the same way (the baseline
  is given our classification for free).

Both run on the studies as written (uncompressed) and re-encoded as RLE Lossless (pydicom's own encoder and
decoder; PACS exports are often compressed, and then decoding every frame dominates the baseline). Prints
studies/s and images/s for both and the ratio. Run: `python benchmarks/processor.py [--repeats 3]`.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np
import pydicom
from pydicom.uid import RLELossless

from cmr_clip.processing import CMRStudyProcessor, select_frames
from cmr_clip.processing.decoding import decode_selected, frame_key
from cmr_clip.processing.headers import scan_headers
from cmr_clip.processing.grouping import split_into_studies
from cmr_clip.processing.reader import SourceStudy, classify_series
from cmr_clip.processing.sources import list_files
from cmr_clip.processing.study import Study
from cmr_clip.synthetic import make_cohort


def ours(folder: Path, processor: CMRStudyProcessor) -> tuple[dict, int]:
    times = {}
    start = time.perf_counter()
    refs, _ = list_files(folder)
    frames, skipped = scan_headers(refs, num_workers=1)
    times["header scan"] = time.perf_counter() - start
    start = time.perf_counter()
    (uid, members), = split_into_studies(frames)
    study = SourceStudy(0, uid, members, skipped).read()
    selection = select_frames(study, processor.study_layout)
    times["group + classify"] = time.perf_counter() - start
    start = time.perf_counter()
    images = decode_selected(selection)
    times["decode + window"] = time.perf_counter() - start
    start = time.perf_counter()
    transform = processor.transform
    cache = transform.transform_all(images)
    [transform.zeros() if item is None else cache[frame_key(item)] for item in selection.frames]
    times["transform"] = time.perf_counter() - start
    return times, len(frames)


def baseline(folder: Path, processor: CMRStudyProcessor) -> dict:
    times = {}
    start = time.perf_counter()
    pixels, series = {}, defaultdict(list)
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        ds = pydicom.dcmread(path)
        array = ds.pixel_array
        pixels[path.relative_to(folder).as_posix()] = array
        series[ds.SeriesInstanceUID].append(ds)
    times["read all with pixels"] = time.perf_counter() - start
    start = time.perf_counter()
    for members in series.values():
        members.sort(key=_position_then_time)
    times["sort"] = time.perf_counter() - start
    start = time.perf_counter()
    refs, _ = list_files(folder)
    frames, _ = scan_headers(refs, num_workers=1)  # untimed: the baseline gets our selection for free
    selection = select_frames(Study(series=classify_series(frames)), processor.study_layout)
    chosen = {frame_key(item): item.frame for item in selection.frames if item is not None}
    start = time.perf_counter()
    eight_bit = {}
    for key, frame in chosen.items():
        image = pixels[frame.file.name]
        image = image[frame.frame_index] if frame.frame_index is not None else image
        low, high = np.percentile(image, (0.5, 99.5))
        eight_bit[key] = np.clip((image - low) * 255.0 / max(high - low, 1e-6), 0, 255).astype(np.uint8)
    processor.transform.transform_all(eight_bit)
    times["transform"] = time.perf_counter() - start
    return times


def _position_then_time(ds) -> tuple:
    position = getattr(ds, "ImagePositionPatient", None)
    orientation = getattr(ds, "ImageOrientationPatient", None)
    if position is None or orientation is None:
        return (0.0, float(getattr(ds, "TriggerTime", 0) or 0))
    normal = np.cross(np.asarray(orientation[:3], float), np.asarray(orientation[3:], float))
    return (float(np.dot(normal, np.asarray(position, float))), float(getattr(ds, "TriggerTime", 0) or 0))


def compress_rle(folder: Path) -> None:
    for path in (p for p in folder.rglob("*") if p.is_file()):
        ds = pydicom.dcmread(path)
        ds.compress(RLELossless)
        ds.save_as(path)


def compare(folders: list[Path], processor: CMRStudyProcessor, repeats: int, label: str) -> None:
    ours_totals, base_totals, n_images = defaultdict(float), defaultdict(float), 0
    for _ in range(repeats):
        for folder in folders:
            times, images = ours(folder, processor)
            n_images += images
            for key, value in times.items():
                ours_totals[key] += value
            for key, value in baseline(folder, processor).items():
                base_totals[key] += value
    n_studies = repeats * len(folders)
    ours_time, base_time = sum(ours_totals.values()), sum(base_totals.values())
    print(f"{label}: {n_studies} full-size studies ({n_images // n_studies} images each on average), reference layout, 64 frames at 224 px")
    for name, totals, total in (("ours", ours_totals, ours_time), ("baseline", base_totals, base_time)):
        print(f"{name:>9}: {n_studies / total:6.2f} studies/s  {n_images / total:8.0f} images/s   "
              + "  ".join(f"{key} {1000 * value / n_studies:.0f} ms" for key, value in totals.items()))
    print(f"speed-up (baseline time / ours): {base_time / ours_time:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    processor = CMRStudyProcessor(layout="reference")
    with tempfile.TemporaryDirectory() as tmp:
        folders = []
        for seed, vendor in enumerate(("siemens", "ge", "philips")):
            out = Path(tmp) / vendor
            make_cohort(out, 1, seed=seed, vendors=[vendor], size="full", progress=False, num_workers=1)
            folders.append(next((out / "studies").iterdir()))
        compare(folders, processor, args.repeats, "uncompressed")
        for folder in folders:
            compress_rle(folder)
        compare(folders, processor, args.repeats, "RLE Lossless")


if __name__ == "__main__":
    main()
