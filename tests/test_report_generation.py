"""CMR-TARGET end to end: `cmr-clip train --task report` (teacher forcing on a prepared corpus, resume),
`pipeline("cmr-report-generation")` from a saved model in a fresh process (greedy deterministic, beam
search, a bad study reported), `cmr-clip report`, and `cmr-clip evaluate --task report` against the
retrieval baseline."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from target_support import random_videos, save_tiny_target
from test_training import make_corpus
from test_zero_shot_support import tiny_config
from transformers import BertTokenizer, pipeline

import cmr_clip  # noqa: F401  (registers the pipeline)
from cmr_clip import CMRCLIPModel, CMRCLIPProcessor, CMRStudyProcessor, CMRTargetForConditionalGeneration, CMRTargetProcessor
from cmr_clip.cli import main as cli
from cmr_clip.data.corpus import load_corpus
from cmr_clip.evaluation.report_generation import evaluate_report_generation, negated_findings_asserted
from cmr_clip.synthetic import make_cohort
from cmr_clip.training import TrainConfig, train

DECODER = {"n_embd": 32, "n_layer": 1, "n_head": 2}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("corpus"), n_train=12, n_val=6)


@pytest.fixture(scope="module")
def clip_dir(corpus, tmp_path_factory):
    """A random CMR-CLIP whose video tower takes the tiny corpus's 4 frames of 16 px, with its processor."""
    config = tiny_config()
    config.vision_config.num_frames = 4
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("clip")
    CMRCLIPModel(config).save_pretrained(path)
    CMRCLIPProcessor(tokenizer=BertTokenizer.from_pretrained(corpus / "tokenizer"),
                     feature_extractor=CMRStudyProcessor.from_pretrained(corpus / "study_processor")).save_pretrained(path)
    return path


def report_config(corpus, clip_dir, out, **overrides):
    fields = dict(task="report", data_dir=str(corpus), output_dir=str(out), cmr_clip_model=str(clip_dir),
                  batch_size=4, eval_batch_size=6, epochs=3, learning_rate=3e-3, progress=False,
                  report_vocab_size=150, num_frame_tokens=2, decoder_config=DECODER, max_text_length=48)
    fields.update(overrides)
    return TrainConfig(**fields)


@pytest.fixture(scope="module")
def trained(corpus, clip_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("target")
    return out, train(report_config(corpus, clip_dir, out))


def test_report_training_learns_and_saves_a_loadable_model(trained, clip_dir):
    out, metrics = trained
    history = metrics["history"]
    assert history[-1]["val_loss"] < history[0]["val_loss"]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    model = CMRTargetForConditionalGeneration.from_pretrained(out)
    processor = CMRTargetProcessor.from_pretrained(out)
    assert processor.num_video_tokens == model.config.num_video_tokens == 3
    clip = load_file(Path(clip_dir) / "model.safetensors")
    target = load_file(out / "model.safetensors")
    frozen = [k for k in clip if k.startswith("vision_model.")]
    assert frozen and all(torch.equal(clip[k], target[k]) for k in frozen), "the frozen video tower changed"
    assert json.loads((out / "metrics.json").read_text())["config"]["task"] == "report"


def test_report_training_resumes_to_the_same_weights(corpus, clip_dir, tmp_path):
    """Resuming from the checkpoint of step 4 (mid-epoch) ends with the weights of the uninterrupted run."""
    whole = tmp_path / "whole"
    train(report_config(corpus, clip_dir, whole, epochs=3, checkpoint_every=4, save_total_limit=10))
    checkpoint = whole / "checkpoints" / "step-00000004"
    assert json.loads((checkpoint / "trainer_state.json").read_text())["batches_in_epoch"] == 1
    resumed = tmp_path / "resumed"
    train(report_config(corpus, clip_dir, resumed, epochs=3, resume=str(checkpoint)))
    a, b = load_file(whole / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)


def test_train_cli_report_task_needs_a_cmr_clip(corpus, tmp_path, capsys):
    assert cli(["train", "--task", "report", "--data-dir", str(corpus), "--output-dir", str(tmp_path),
                "--no-progress"]) == 2
    assert "--cmr-clip-model" in capsys.readouterr().err


def test_unknown_task_is_refused(corpus, tmp_path):
    with pytest.raises(ValueError, match="Unknown task 'caption'"):
        train(TrainConfig(task="caption", data_dir=str(corpus), output_dir=str(tmp_path)))


@pytest.fixture(scope="module")
def target_dir(tmp_path_factory):
    return save_tiny_target(tmp_path_factory.mktemp("tiny_target"))


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    root = tmp_path_factory.mktemp("cohort")
    make_cohort(root, 2, seed=7, progress=False, num_workers=1)
    return sorted(str(p) for p in (root / "studies").iterdir())


def test_pipeline_in_a_fresh_process_greedy_is_deterministic_and_beam_search_works(target_dir, studies):
    code = (
        "import json, sys, cmr_clip\n"
        "from transformers import BertTokenizer, pipeline\n"
        "draft = pipeline('cmr-report-generation', model=sys.argv[1])\n"
        "greedy = [draft(sys.argv[2], max_new_tokens=20) for _ in range(2)]\n"
        "beam = draft(sys.argv[2], max_new_tokens=20, num_beams=3)\n"
        "print(json.dumps({'greedy': greedy, 'beam': beam, 'model': type(draft.model).__name__}))\n"
    )
    result = subprocess.run([sys.executable, "-c", code, str(target_dir), studies[0]], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["model"] == "CMRTargetForConditionalGeneration"
    first, second = answer["greedy"]
    assert first == second
    for draft in (first, answer["beam"]):
        assert set(draft) == {"generated_impression", "sentences", "warnings"}
        assert draft["generated_impression"] == " ".join(draft["sentences"])
    # The same draft as the model's own generate on the processor's frames.
    model = CMRTargetForConditionalGeneration.from_pretrained(target_dir)
    processor = CMRTargetProcessor.from_pretrained(target_dir)
    pixels = processor(studies=studies[0])["pixel_values_videos"]
    assert processor.decode_sentences(model.generate(pixels, max_new_tokens=20))[0] == first["sentences"]


def test_pipeline_inputs_batches_and_a_bad_study(target_dir, studies, tmp_path):
    draft = pipeline("cmr-report-generation", model=str(target_dir))
    videos = random_videos(2, seed=1)
    alone = [draft({"pixel_values_videos": v}, max_new_tokens=12) for v in videos]
    assert draft([{"pixel_values_videos": v} for v in videos], max_new_tokens=12, batch_size=2) == alone
    bad = tmp_path / "not_a_study"
    bad.mkdir()
    (bad / "notes.txt").write_text("not DICOM")
    answers = draft([studies[0], str(bad)], max_new_tokens=12)
    assert "generated_impression" in answers[0]
    assert set(answers[1]) == {"error"} and str(bad) not in answers[1]["error"]
    several = draft({"pixel_values_videos": videos[0]}, max_new_tokens=12, num_beams=3, num_return_sequences=2)
    assert isinstance(several, list) and len(several) == 2
    with pytest.raises(TypeError, match="cmr-report-generation takes a study path"):
        draft(42)


def test_report_cli_prints_the_draft_with_its_note(target_dir, studies, tmp_path, capsys):
    out = tmp_path / "drafts.json"
    assert cli(["report", studies[0], "--model", str(target_dir), "--max-new-tokens", "12", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("DRAFT generated by CMR-TARGET") and Path(studies[0]).name in printed
    saved = json.loads(out.read_text())
    assert "not a report" in saved["note"] and saved["drafts"][0]["study"] == Path(studies[0]).name


def test_negated_findings_asserted_counts_contradictions():
    references = ["No pericardial effusion. No late gadolinium enhancement.", "Dilated LV."]
    predictions = ["Small pericardial effusion. No LGE.", "Dilated LV. No pericardial effusion."]
    figures = negated_findings_asserted(predictions, references)
    assert figures == {"negated_pairs": 2, "negated_asserted": 1, "negated_asserted_rate": 0.5}


def test_evaluate_report_task_compares_with_the_retrieval_baseline(trained, corpus, clip_dir, tmp_path, capsys):
    out, _ = trained
    results = evaluate_report_generation(out, corpus, tmp_path, split="validation", max_new_tokens=24, progress=False)
    assert set(results) >= {"cmr_target", "retrieval_baseline", "examples"}
    references = {e["reference"] for e in results["examples"]}
    train_impressions = set(load_corpus(str(corpus))["train"]["impression"])
    assert all(e["retrieval"] in train_impressions for e in results["examples"])
    assert references and results["cmr_target"]["n_reports"] == 6
    assert json.loads((tmp_path / "report_metrics.json").read_text())["split"] == "validation"
    assert cli(["evaluate", "--task", "report", "--model", str(out), "--data", str(corpus), "--split", "validation",
                "--clip-model", str(clip_dir), "--max-new-tokens", "16", "--out", str(tmp_path / "cli")]) == 0
    assert "finding_f1_micro" in capsys.readouterr().out


def test_draft_reports_example(target_dir, studies, capsys):
    """examples/draft_reports.py: CMR-TARGET's sentences and the nearest training impression for each study."""
    import importlib.util

    from test_zero_shot_support import tiny_corpus

    clip = Path(target_dir) / "clip"  # the random CMR-CLIP the tiny CMR-TARGET was built from
    corpus = tiny_corpus()
    corpus.save_to_disk(str(clip / "corpus"))
    script = Path(__file__).resolve().parents[1] / "examples" / "draft_reports.py"
    spec = importlib.util.spec_from_file_location("draft_reports", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = module.main([str(target_dir), str(clip), *studies])
    assert [r["study"] for r in rows] == [Path(s).name for s in studies]
    assert all(r["retrieval"] in set(corpus["train"]["impression"]) for r in rows)
    assert all(isinstance(r["cmr_target"], list) for r in rows)
    assert "CMR-TARGET draft:" in capsys.readouterr().out


def test_report_training_in_bf16_mixed_precision(corpus, clip_dir, tmp_path):
    metrics = train(report_config(corpus, clip_dir, tmp_path, epochs=1, mixed_precision="bf16"))
    assert math.isfinite(metrics["history"][0]["val_loss"])
    assert CMRTargetForConditionalGeneration.from_pretrained(tmp_path).dtype == torch.float32


def test_paired_differences_on_known_drafts():
    """A system that states every reference finding against one that misses them: +F1 with an interval above 0;
    identical systems: a zero difference."""
    from cmr_clip.evaluation.report_generation import finding_counts, paired_differences

    references = ["Dilated LV. Small pericardial effusion.", "Concentric LV hypertrophy.", "No LGE."] * 10
    perfect = list(references)
    blank = ["Normal study."] * len(references)
    assert finding_counts(perfect[:2], references[:2]).tolist() == [[2, 0, 0], [1, 0, 0]]
    assert finding_counts(blank[:2], references[:2]).tolist() == [[0, 0, 2], [0, 0, 1]]
    better = paired_differences(perfect, blank, references, resamples=200)
    assert better["finding_f1_micro"]["value"] == pytest.approx(1.0) and better["finding_f1_micro"]["low"] > 0.9
    assert better["rougeL"]["value"] > 0 and better["rougeL"]["low"] > 0
    same = paired_differences(perfect, perfect, references, resamples=200)
    assert same["finding_f1_micro"]["value"] == 0 and same["rougeL"]["high"] == 0
