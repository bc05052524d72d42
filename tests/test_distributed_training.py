"""Training on two processes (CPU, gloo, launched by torchrun as on a cluster): the same weights and
validation metrics as one process with the same global batch, for CMR-CLIP and CMR-TARGET; a run killed
after a mid-epoch checkpoint resumes to the uninterrupted run's weights; FSDP shard units come from the
models' `_no_split_modules`; and, where two GPUs are present, the same under FSDP2."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from target_support import save_tiny_target
from test_modeling_cmr_clip import tiny_config
from test_report_generation import DECODER, report_config
from test_training import make_corpus, tiny_train_config, wait_for_mid_epoch_checkpoint

from cmr_clip import CMRCLIPModel, CMRTargetForConditionalGeneration
from cmr_clip.training.checkpointing import fsdp_layers_to_wrap
from cmr_clip.training.checkpointing import latest_checkpoint

ROOT = Path(__file__).resolve().parents[1]
NO_DROPOUT_TEXT = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                       hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
NO_DROPOUT_DECODER = {**DECODER, "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}
ENV = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
PER_PROCESS_BATCH = 4


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    # 7 validation studies: 2 processes see 4 each, one padded; the gathered metrics must drop the pad.
    return make_corpus(tmp_path_factory.mktemp("corpus"), n_train=16, n_val=7)


def launch(config, work: Path, processes: int, port: int, wait: bool = True, launcher: list[str] | None = None,
           env=ENV):
    """`cmr-clip train` (its module) under torchrun (or `launcher`); one process runs it directly.
    Returns the run's metrics, or the running launcher with `wait=False`."""
    config_file = work / f"{Path(config.output_dir).name}.json"
    config_file.write_text(json.dumps(config.to_dict()))
    if launcher is None and processes > 1:
        launcher = ["-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--master_port", str(port)]
    command = [sys.executable, *(launcher or []), "-m", "cmr_clip.training", "--config", str(config_file)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
                               start_new_session=True)
    if not wait:
        return process
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr.decode()[-4000:]
    return json.loads((Path(config.output_dir) / "metrics.json").read_text())


def assert_same_weights(a: Path, b: Path):
    expected, actual = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert expected.keys() == actual.keys()
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], atol=1e-5, rtol=0, msg=key)


@pytest.mark.slow
def test_two_process_contrastive_run_equals_one_process_with_the_same_global_batch(corpus, tmp_path):
    common = dict(max_steps=4, text=NO_DROPOUT_TEXT)  # augmentation stays on: it is seeded per study
    one = launch(tiny_train_config(corpus, tmp_path / "one", batch_size=2 * PER_PROCESS_BATCH, **common), tmp_path, 1, 0)
    two = launch(tiny_train_config(corpus, tmp_path / "two", batch_size=PER_PROCESS_BATCH, **common), tmp_path, 2, 29531)

    assert two["history"][-1]["step"] == 4
    assert_same_weights(tmp_path / "one", tmp_path / "two")
    assert CMRCLIPModel.from_pretrained(tmp_path / "two").state_dict().keys() == load_file(
        str(tmp_path / "one" / "model.safetensors")).keys()
    # The gathered loss is the global batch's on every process, and the validation metrics are gathered
    # over both processes' studies (7, one process padded) without the padding.
    for a, b in zip(one["history"], two["history"]):
        assert a.keys() == b.keys()
        for key in a:
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), key


@pytest.mark.slow
def test_two_process_report_run_equals_one_process_with_the_same_global_batch(corpus, tmp_path):
    clip = tmp_path / "clip"
    launch(tiny_train_config(corpus, clip, max_steps=1), tmp_path, 1, 0)
    common = dict(max_steps=4, decoder_config=NO_DROPOUT_DECODER)
    one_config = report_config(corpus, clip, tmp_path / "one", batch_size=2 * PER_PROCESS_BATCH, eval_batch_size=4, **common)
    two_config = report_config(corpus, clip, tmp_path / "two", batch_size=PER_PROCESS_BATCH, eval_batch_size=4, **common)
    one = launch(one_config, tmp_path, 1, 0)
    two = launch(two_config, tmp_path, 2, 29533)

    assert_same_weights(tmp_path / "one", tmp_path / "two")
    loaded = CMRTargetForConditionalGeneration.from_pretrained(tmp_path / "two")
    assert loaded.state_dict().keys() >= load_file(str(tmp_path / "one" / "model.safetensors")).keys()
    # The token-weighted validation loss, summed over both processes, is the single process's.
    for a, b in zip(one["history"], two["history"]):
        assert b["val_loss"] == pytest.approx(a["val_loss"], rel=1e-5)


@pytest.mark.slow
def test_two_process_run_killed_after_a_mid_epoch_checkpoint_resumes_to_the_same_weights(corpus, tmp_path):
    common = dict(batch_size=PER_PROCESS_BATCH, max_steps=10, checkpoint_every=1, text=NO_DROPOUT_TEXT)
    launch(tiny_train_config(corpus, tmp_path / "reference", **common), tmp_path, 2, 29535)

    interrupted = tmp_path / "interrupted"
    process = launch(tiny_train_config(corpus, interrupted, **common), tmp_path, 2, 29537, wait=False)
    wait_for_mid_epoch_checkpoint(process, interrupted)
    os.killpg(process.pid, signal.SIGKILL)  # the launcher and both workers
    process.wait()
    state = json.loads((latest_checkpoint(str(interrupted)) / "trainer_state.json").read_text())
    assert 0 < state["global_step"] < 10 and state["batches_in_epoch"] > 0, state
    assert not (interrupted / "model.safetensors").exists()

    launch(tiny_train_config(corpus, interrupted, resume="latest", **common), tmp_path, 2, 29539)
    assert_same_weights(tmp_path / "reference", interrupted)
    assert (json.loads((interrupted / "metrics.json").read_text())["history"]
            == json.loads((tmp_path / "reference" / "metrics.json").read_text())["history"])


def test_fsdp_shard_units_cover_every_tower_and_decoder_but_not_the_input_embedding(tmp_path):
    clip = CMRCLIPModel(tiny_config())
    # BERT names its embeddings module too, but that holds the input embedding Accelerate shards itself.
    assert "BertEmbeddings" in clip._no_split_modules
    assert fsdp_layers_to_wrap(clip) == ["BertLayer", "CMRCLIPVisionEmbeddings", "CMRCLIPVisionLayer"]
    target = CMRTargetForConditionalGeneration.from_pretrained(save_tiny_target(tmp_path / "target"))
    assert fsdp_layers_to_wrap(target) == ["CMRCLIPVisionEmbeddings", "CMRCLIPVisionLayer", "GPT2Block"]


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="FSDP2 needs 2 GPUs: Accelerate runs FSDP only on GPUs "
                    "(on CPU an FSDP plugin is ignored for DDP)")
@pytest.mark.parametrize("task", ["contrastive", "report"])
def test_two_gpu_fsdp_run_saves_the_whole_model_equal_to_one_process(corpus, tmp_path, task):
    fsdp = ["-m", "accelerate.commands.launch", "--config_file", str(ROOT / "examples" / "accelerate_fsdp.yaml"),
            "--num_processes", "2", "--mixed_precision", "no", "--main_process_port", "29541"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if task == "contrastive":
        configs = [tiny_train_config(corpus, tmp_path / name, batch_size=size, max_steps=4, text=NO_DROPOUT_TEXT,
                                     checkpoint_every=2) for name, size in (("one", 8), ("two", 4))]
        model_class = CMRCLIPModel
    else:
        clip = tmp_path / "clip"
        launch(tiny_train_config(corpus, clip, max_steps=1), tmp_path, 1, 0, env=env)
        configs = [report_config(corpus, clip, tmp_path / name, batch_size=size, max_steps=4, checkpoint_every=2,
                                 decoder_config=NO_DROPOUT_DECODER) for name, size in (("one", 8), ("two", 4))]
        model_class = CMRTargetForConditionalGeneration
    launch(configs[0], tmp_path, 1, 0, env={**env, "CUDA_VISIBLE_DEVICES": "0"})
    launch(configs[1], tmp_path, 2, 0, launcher=fsdp, env=env)
    assert_same_weights(tmp_path / "one", tmp_path / "two")
    model_class.from_pretrained(tmp_path / "two")
    # The sharded checkpoint resumes: one more step from step 2's state.
    resumed = configs[1]
    resumed.resume, resumed.max_steps = str(tmp_path / "two" / "checkpoints" / "step-00000004"), 5
    launch(resumed, tmp_path, 2, 0, launcher=fsdp, env=env)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 and bf16 on a GPU need one")
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_gpu_mixed_precision_contrastive_training_learns(corpus, tmp_path, precision):
    fp32 = launch(tiny_train_config(corpus, tmp_path / "fp32", epochs=3, augment=False), tmp_path, 1, 0,
                  env={**os.environ, "CUDA_VISIBLE_DEVICES": "0"})["history"]
    mixed = launch(tiny_train_config(corpus, tmp_path / precision, epochs=3, augment=False, mixed_precision=precision),
                   tmp_path, 1, 0, env={**os.environ, "CUDA_VISIBLE_DEVICES": "0"})["history"]
    assert mixed[-1]["train_loss"] < mixed[0]["train_loss"]
    assert mixed[0]["train_loss"] == pytest.approx(fp32[0]["train_loss"], rel=0.05)
    assert CMRCLIPModel.from_pretrained(tmp_path / precision).dtype == torch.float32
