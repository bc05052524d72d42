"""`cmr-clip demo`: the first thing to run. Writes a synthetic cohort of cardiac MRI studies with reports,
prepares it, trains a small CMR-CLIP from scratch on the CPU, evaluates it on held-out studies and saves
it, then trains a small CMR-TARGET on its video tower and drafts a held-out study's impression; all on a
laptop and without any patient data.

    cmr-clip demo --output-dir cmr-clip-demo
    python -c "from cmr_clip import CMRCLIPModel; CMRCLIPModel.from_pretrained('cmr-clip-demo')"
    cmr-clip report cmr-clip-demo/cohort/studies/SYN00000 --model cmr-clip-demo/report
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from transformers import pipeline

from .data.prepare import prepare, train_wordpiece_tokenizer
from .evaluation.report import evaluate_held_out
from .evaluation.zero_shot import zero_shot_table
from .privacy import write_json
from .processing import CMRStudyProcessor, StudyLayout
from .processing.pixels import zoom_sizes
from .synthetic import make_cohort
from .training import TrainConfig, TrainingSchedule, train

# The demo's small model: 16 frames of 64 x 64 px in 16 px patches, a 4-layer video tower (time attention
# initialised like space attention: there is no image model to start from) and a 2-layer BERT with a
# WordPiece vocabulary learned from the cohort's training impressions.
DEMO_VISION = dict(patch_size=16, hidden_size=128, num_hidden_layers=4, num_attention_heads=4, intermediate_size=256,
                   time_init="normal")
DEMO_TEXT = dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256)
DEMO_PROJECTION_DIM = 64
LONG_AXIS_FIELD_OF_VIEW_MM = {"2ch": 240.0, "3ch": 240.0, "4ch": 240.0}
# The demo's CMR-TARGET decoder: a 3-layer GPT-2, 192 wide, with a byte-level BPE vocabulary from the cohort.
DEMO_DECODER = dict(n_embd=192, n_layer=3, n_head=4)


@dataclass
class DemoSettings(TrainingSchedule):
    """The demo's run; its `TrainingSchedule` is the CMR-CLIP step's."""

    out: str = "cmr-clip-demo"
    """Folder for the cohort, corpus, model and metrics."""
    studies: int = 400
    """Synthetic studies to write."""
    enrich: float = 0.5
    """Share of patients drawn as cases of one finding (`make_cohort`'s `enrich`): the natural mix gives RV and
    aortic dilation about 4% and 3% of studies, 1 or 2 of the 63 test studies; this share gives every finding
    about 9% or more, enough to learn from and to measure an AUC on."""
    num_frames: int = 16
    """Frames per study in the prepared corpus."""
    image_size: int = 64
    """Frame size in pixels in the prepared corpus."""
    field_of_view_mm: float | dict | None = field(default_factory=lambda: dict(LONG_AXIS_FIELD_OF_VIEW_MM))
    """Crop by millimetres instead of `zoom` (the processor's `field_of_view_mm`: one field for every view, or one per
    view; `--field-of-view 2ch=240,3ch=240,4ch=240`, `--field-of-view none` for the pixel crop alone). By default
    the long-axis views are cropped to 240 mm (3.75 mm a pixel; the synthetic long-axis images are 170 to 270 mm
    on their short side, and the frame pads the narrower ones), so that a dilated aortic root or ventricle spans
    more pixels than a normal one in every study: with the pixel crop a large heart was drawn as large as a small
    one and the aortic root of a dilated left ventricle lay at the frame's edge. The short axis keeps `zoom`: at
    110 to 140 mm a dilated left ventricle pushed the RV out of the frame."""
    cine_phases: str = "cycle"
    """Where the cine frames lie on the cardiac cycle (`StudyLayout.default`'s `cine_phases`): "cycle" shows
    end-diastole and equal shares of the cycle after it (with 3 frames: end-diastole, about end-systole and
    diastole), "all" the middles of equal thirds (1/6, 1/2 and 5/6 of the cycle), never the largest ventricle
    an ejection fraction compares."""
    zoom: float = 1.25
    """Centre crop of each image before it is resized to `image_size`: the middle 1/zoom of its short side (the
    processor's `resize_shortest_edge` = zoom x image_size, `crop_size` = image_size). Cardiac planes are centred on
    the heart; at 1.25 the heart fills more of the 64 px frame, and a wall or scar more pixels. 1 keeps the
    whole field of view. With `field_of_view_mm`, only for views it leaves out."""
    vocab_size: int = 1000
    """WordPiece vocabulary learnt from the training impressions (without `text_model`)."""
    text_model: str | None = None
    """Start the text tower from a pretrained encoder (name or local dir) instead of a small BERT trained
    from scratch."""
    num_proc: int = max(1, min(4, os.cpu_count() or 1))
    """Processes for writing and reading DICOM."""
    mixed_precision: str = "no"
    """Training precision of both steps (`TrainConfig.mixed_precision`). float32 ("no") by default: at the demo's
    width (128) bf16 autocast costs more in casts than it saves, even on a CPU with native bf16 (an AMD EPYC with
    AVX512-BF16: 0.87x float32's training steps in `benchmarks/training.py`, and 157 s against 87 s for the
    CMR-CLIP step), while at ViT-B width it is 1.65x. "auto" (bf16 where the CPU or GPU computes it natively)
    or "bf16" train in bf16. `metrics.json` says which ran."""
    sentence_loss: float = 0.5
    """Weight of the sentence-level contrastive loss of the CMR-CLIP step (`TrainConfig.sentence_loss`; 0: off).
    With the mined prompts, it raised the mean zero-shot AUC from 0.82 to 0.85 (seed 0) and from 0.77 to 0.80
    (seed 1), and cost Recall@5 (3.8 and 3.2 times chance without it, 3.6 and 3.0 with it)."""
    sentence_separation: float = 0.5
    """Weight of the text-only loss that sets the batch's drawn sentences apart (`TrainConfig.sentence_separation`;
    0: off). Without it both towers settled on a few directions (the test impressions' embeddings spread over
    3 to 5 of 64) and read RV dysfunction as a failing LV; with it the impressions spread over about 13, and in
    seeds 0 and 1 Recall@5 rose from 3.6 and 3.0 to 4.4 and 4.8 times chance, the mean zero-shot AUC from 0.85
    and 0.80 to 0.86 and 0.83 and RV dysfunction from 0.59 and 0.43 to 0.69 and 0.72."""
    mine_prompts: bool = True
    """Evaluate zero-shot with finding prompts mined from the cohort's training impressions
    (`evaluation.prompt_mining`) instead of the built-in ones, and save them with the model. A text tower trained
    from scratch on 277 impressions knows only their words: with the built-in prompts LV hypertrophy scored
    backwards (raw AUC 0.02 and 0.00 in the two seeds), with the mined ones 0.92 to 1.00."""
    report_epochs: int = 9
    """Epochs of the CMR-TARGET report step (0 skips it). A 40-epoch schedule overfitted after about epoch 19
    and ended at a validation loss of 0.42; 12 epochs at a learning rate of 1e-3 ended at 0.42 too, and so do
    these 9 at 2e-3 (9 at 1e-3: 0.55), in under 2 minutes on 2 cores."""

    # The demo's own defaults for `TrainingSchedule` fields.
    epochs: int = 32
    """Epochs of the CMR-CLIP step. Validation Recall@5 still rose at epoch 24; 40 did no better than 32 (seed 0)."""
    batch_size: int = 8
    """Studies per batch of the CMR-CLIP step."""
    learning_rate: float = 1e-3
    """Peak learning rate of the CMR-CLIP step."""


def run_demo(settings: DemoSettings) -> dict:
    """Cohort -> corpus -> training -> held-out evaluation; returns the figures written to `out/metrics.json`."""
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    timings = {}

    start = time.perf_counter()
    steps = 5 if settings.report_epochs else 4
    _step(f"1/{steps} writing {settings.studies} synthetic studies (beating-heart phantoms as DICOM, with reports)")
    make_cohort(out / "cohort", settings.studies, seed=settings.seed, size="small", num_workers=settings.num_proc,
                progress=settings.progress, enrich=settings.enrich)
    timings["synthesis_s"] = time.perf_counter() - start

    start = time.perf_counter()
    _step(f"2/{steps} reading the DICOM studies and preparing the corpus (patient-level splits)")
    processor = CMRStudyProcessor(num_frames=settings.num_frames, image_size=settings.image_size,
                                  layout=StudyLayout.default(settings.num_frames, cine_phases=settings.cine_phases),
                                  field_of_view_mm=settings.field_of_view_mm,
                                  **zoom_sizes(settings.image_size, settings.zoom))
    corpus = prepare(out / "cohort" / "studies", out / "cohort" / "reports.jsonl", out / "corpus", processor=processor,
                     num_proc=settings.num_proc, seed=settings.seed, progress=settings.progress)
    if settings.text_model is None:
        train_wordpiece_tokenizer(corpus["train"]["impression"], out / "corpus" / "tokenizer", settings.vocab_size)
    timings["prepare_s"] = time.perf_counter() - start

    start = time.perf_counter()
    _step(f"3/{steps} training a small CMR-CLIP from scratch for {settings.epochs} epochs")
    config = TrainConfig(
        **settings.schedule(), data_dir=str(out / "corpus"), output_dir=str(out), text_model=settings.text_model,
        vision=DEMO_VISION, text={} if settings.text_model else DEMO_TEXT, projection_dim=DEMO_PROJECTION_DIM,
        eval_batch_size=64, eval_every=4, warmup_ratio=0.1, max_text_length=128, learnable_logit_scale=True,
        crop_scale=[0.8, 1.0],
        # Half of each impression's sentences per step: findings are then learnt one sentence at a time, as
        # zero-shot prompts ask about them. No flips: a mirrored image swaps the sides the two ventricles lie on.
        sentence_keep=0.5, flip_probability=0.0, mixed_precision=settings.mixed_precision,
        sentence_loss=settings.sentence_loss, sentence_separation=settings.sentence_separation,
    )
    training = train(config)
    shutil.rmtree(out / "checkpoints", ignore_errors=True)
    timings["training_s"] = time.perf_counter() - start

    start = time.perf_counter()
    _step(f"4/{steps} evaluating on the held-out test studies")
    held_out = evaluate_held_out(out, corpus, reports=out / "cohort" / "reports.jsonl", mine_prompts=settings.mine_prompts)
    timings["evaluation_s"] = time.perf_counter() - start

    report = None
    if settings.report_epochs:
        start = time.perf_counter()
        _step(f"5/{steps} training a small CMR-TARGET on the CMR-CLIP video tower for {settings.report_epochs} epochs, "
              "then drafting a held-out study's impression")
        report = train_report_model(settings, out, corpus["test"])
        timings["report_s"] = time.perf_counter() - start

    metrics = {
        **held_out,  # test_retrieval, test_zero_shot, test_effective_rank
        "validation_history": training["history"],
        "training_precision": {"mixed_precision": training["mixed_precision"], "reason": training["mixed_precision_reason"]},
        **({"report": report} if report else {}),
        "splits": {name: len(split) for name, split in corpus.items()},
        "timings_s": timings,
        "settings": {k: v for k, v in vars(settings).items() if k != "progress"},
    }
    write_json(out / "metrics.json", metrics)
    return metrics


def train_report_model(settings: DemoSettings, out: Path, test_split) -> dict:
    """CMR-TARGET in `out/report`, from the demo's CMR-CLIP (its video tower tuned along: on this small cohort a
    frozen tower gave a decoder that leans on the words more than on the study), and its draft for the first
    test study, read from its DICOM folder through `pipeline("cmr-report-generation")`."""
    config = TrainConfig(
        task="report", data_dir=str(out / "corpus"), output_dir=str(out / "report"), cmr_clip_model=str(out),
        decoder_config=DEMO_DECODER, freeze_vision=False, epochs=settings.report_epochs, batch_size=16, eval_batch_size=64,
        eval_every=3,
        learning_rate=2e-3, warmup_ratio=0.1, max_text_length=128, seed=settings.seed, crop_scale=[0.8, 1.0],
        progress=settings.progress, mixed_precision=settings.mixed_precision,
    )
    training = train(config)
    shutil.rmtree(out / "report" / "checkpoints", ignore_errors=True)
    study_id, reference = test_split[0]["study_id"], test_split[0]["impression"]
    draft = pipeline("cmr-report-generation", model=str(out / "report"))(str(out / "cohort" / "studies" / study_id))
    return {"validation_history": training["history"], "example": {
        "study": study_id, "reference": reference, "draft": draft.get("generated_impression", draft.get("error"))}}


def summary_table(metrics: dict, settings: DemoSettings) -> str:
    test = metrics["test_retrieval"]
    lines = [
        "",
        f"CMR-CLIP demo: held-out test split ({int(test['n'])} studies)",
        "",
        "| retrieval       | R@1  | R@5  | R@10 | median rank | chance R@5 |",
        "| --------------- | ---- | ---- | ---- | ----------- | ---------- |",
    ]
    for direction, label in (("text_to_study", "text -> study"), ("study_to_text", "study -> text")):
        lines.append(
            f"| {label:<15} | {test[f'{direction}_R@1']:.2f} | {test[f'{direction}_R@5']:.2f} | "
            f"{test[f'{direction}_R@10']:.2f} | {test[f'{direction}_median_rank']:>11.1f} | {test['chance_R@5']:>10.2f} |"
        )
    rank = metrics.get("test_effective_rank")
    if rank:
        lines += ["", f"Effective rank of the test embeddings (directions they spread over, of {DEMO_PROJECTION_DIM}): "
                      f"studies {rank['video']:.1f}, impressions {rank['text']:.1f}"]
    total = sum(metrics["timings_s"].values())
    lines += ["", zero_shot_table(metrics["test_zero_shot"])]
    if "report" in metrics:
        example = metrics["report"]["example"]
        lines += ["", f"CMR-TARGET draft for held-out study {example['study']} (a draft for a reader to edit):",
                  f"  draft: {example['draft']}", f"  true:  {example['reference']}"]
    lines += [
        "",
        f"Finished in {total / 60:.1f} min. Model, processor and metrics.json are in {settings.out}/",
        "",
        "Next:",
        f"  cmr-clip inspect {settings.out}/cohort/studies/SYN00000      # how a study is read and classified",
        f"  python -c \"from cmr_clip import CMRCLIPModel; CMRCLIPModel.from_pretrained('{settings.out}')\"",
        f"  cmr-clip train --data-dir {settings.out}/corpus --init-from {settings.out} --output-dir more-training",
    ]
    if "report" in metrics:
        lines += [f"  cmr-clip report {settings.out}/cohort/studies/{metrics['report']['example']['study']} "
                  f"--model {settings.out}/report",
                  f"  cmr-clip evaluate --task report --model {settings.out}/report --data-dir {settings.out}/corpus"]
    return "\n".join(lines)


def _step(message: str) -> None:
    print(f"\n== {message}", flush=True)
