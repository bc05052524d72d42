"""Embedding a study straight from a PACS against exporting it to disk first, on a real Orthanc server.

Writes one synthetic study (full size by default), stores it in a local Orthanc with its DICOMweb plugin
(tests/orthanc_server.py: the Debian packages `orthanc` and `orthanc-dicomweb`), and times, in the same run:

- ours: `read_study(server.study(uid))` (WADO-RS metadata, then WADO-RS frames for only the frames the
  processor decodes) + `CMRStudyProcessor` + the model's study embedding;
- baseline: what a user does today: every instance retrieved (WADO-RS, the whole study), written to a
  folder, then read from disk by the same processor and embedded by the same model.

Both talk to the same server over HTTP on localhost (no network latency, which would favour ours further).
Prints the best of `--repeats` wall times, requests and megabytes received for both, and the ratio; checks that
the two embeddings are identical. Run: `python benchmarks/dicomweb.py [--size full] [--vendor siemens]`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pydicom
import requests
import torch

from cmr_clip.embeddings import encode_videos
from cmr_clip.modeling import CMRCLIPConfig, CMRCLIPModel
from cmr_clip.processing import CMRStudyProcessor, read_study
from cmr_clip.processing.dicomweb import DICOMwebServer
from cmr_clip.synthetic import make_cohort

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from orthanc_server import OrthancServer, store_folder  # noqa: E402 - the tests' server helper, reused


class MeteredSession(requests.Session):
    """Counts requests and the bytes of their answers."""

    def __init__(self):
        super().__init__()
        self.requests, self.bytes = 0, 0

    def request(self, *args, **kwargs):
        response = super().request(*args, **kwargs)
        self.requests += 1
        self.bytes += len(response.content)
        return response


def small_model(processor: CMRStudyProcessor) -> CMRCLIPModel:
    """A random-weight CMR-CLIP taking the processor's video (the embedding costs the same on both paths)."""
    vision = dict(num_frames=processor.num_frames, image_size=processor.image_size, patch_size=32, hidden_size=64,
                  num_hidden_layers=2, num_attention_heads=2, intermediate_size=128)
    text = dict(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    return CMRCLIPModel(CMRCLIPConfig(vision_config=vision, text_config=text, projection_dim=32)).eval()


def connect(orthanc: OrthancServer) -> tuple[DICOMwebServer, MeteredSession]:
    session = MeteredSession()
    session.auth = orthanc.auth
    return DICOMwebServer(orthanc.url, session=session), session


@torch.no_grad()
def from_pacs(orthanc, uid, processor, model) -> tuple[float, torch.Tensor, MeteredSession]:
    server, session = connect(orthanc)
    start = time.perf_counter()
    video = processor(server.study(uid))["pixel_values_videos"]
    embedding = encode_videos(model, video)
    return time.perf_counter() - start, embedding, session


@torch.no_grad()
def export_then_read(orthanc, uid, processor, model) -> tuple[float, torch.Tensor, MeteredSession]:
    server, session = connect(orthanc)
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        for number, ds in enumerate(server.call("exporting the study", "retrieve_study", uid)):
            ds.save_as(Path(folder) / f"{number:05d}.dcm", enforce_file_format=True)
        video = processor(folder)["pixel_values_videos"]
        embedding = encode_videos(model, video)
        return time.perf_counter() - start, embedding, session


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="full", choices=("small", "full"))
    parser.add_argument("--vendor", default="siemens", choices=("siemens", "ge", "philips"))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as work:
        make_cohort(Path(work) / "cohort", 1, seed=1, vendors=[args.vendor], size=args.size, progress=False, num_workers=1)
        folder = next((Path(work) / "cohort" / "studies").iterdir())
        files = [p for p in sorted(folder.rglob("*")) if p.is_file()]
        uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
        orthanc = OrthancServer(Path(work) / "orthanc").start()
        try:
            store_folder(orthanc, folder)
            processor = CMRStudyProcessor()
            model = small_model(processor)
            images = sum(len(s.frames) for s in read_study(folder).series)
            ours = min((from_pacs(orthanc, uid, processor, model) for _ in range(args.repeats)), key=lambda r: r[0])
            base = min((export_then_read(orthanc, uid, processor, model) for _ in range(args.repeats)), key=lambda r: r[0])
        finally:
            orthanc.stop()
    assert torch.equal(ours[1], base[1]), "the two paths must give the same embedding"
    print(f"study: {args.vendor}, size {args.size}, {len(files)} files, {images} images; best of {args.repeats}")
    for name, (seconds, _, session) in (("ours: DICOMweb, selected frames", ours), ("baseline: export all, read disk", base)):
        print(f"{name:34s} {seconds:7.2f} s  {session.requests:5d} requests  {session.bytes / 1e6:8.2f} MB received")
    print(f"speed-up (baseline / ours): {base[0] / ours[0]:.2f}x; data received: {base[2].bytes / max(ours[2].bytes, 1):.1f}x less")
    return 0


if __name__ == "__main__":
    sys.exit(main())
