"""CMR-CLIP model: equivalence to the published model's golden vectors, the converter, save/load, and the
behaviours a video-text model must have (batch independence, fewer frames, gradient checkpointing)."""

import copy
import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModel, BertConfig, BertModel, ViTConfig, ViTModel

from test_zero_shot_support import tiny_tokenizer

from cmr_clip import CMRCLIPConfig, CMRCLIPModel, CMRCLIPVisionModel
from cmr_clip.modeling.convert_original_checkpoint import (
    CheckpointMismatchError,
    check_against_model,
    convert,
    convert_state_dict,
    infer_vision_config,
)

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / ".." / "shared" / "fixtures" / "reference_cmrclip"
STATE_DICT = FIXTURE / "reference_state_dict.safetensors"
CONFIG = FIXTURE / "reference_config.json"
ATOL = 1e-4


def tiny_config(**overrides) -> CMRCLIPConfig:
    vision = dict(
        image_size=16, patch_size=8, num_frames=6, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=64, time_init="normal",
    )
    vision.update(overrides.pop("vision", {}))
    text = BertConfig(vocab_size=60, hidden_size=24, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=48, max_position_embeddings=32)
    return CMRCLIPConfig(vision_config=vision, text_config=text, projection_dim=16, **overrides)


@pytest.fixture(scope="module")
def reference_io():
    return load_file(str(FIXTURE / "reference_io.safetensors"))


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tokenizer")
    tiny_tokenizer().save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def converted_dir(tmp_path_factory, tokenizer_dir):
    """`cmr-clip convert-original` in a fresh process, with the old `--out` spelling (kept for one release)."""
    out = tmp_path_factory.mktemp("converted") / "out"
    result = subprocess.run(
        [sys.executable, "-m", "cmr_clip", "convert-original", "--checkpoint", str(STATE_DICT),
         "--config", str(CONFIG), "--out", str(out), "--tokenizer", str(tokenizer_dir)],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "Dropping text_model.pooler" in result.stderr  # the converter says what it drops
    assert "--out is deprecated and will be removed in the next release; use --output-dir" in result.stderr
    return out


def test_the_converter_module_names_the_command_it_moved_to():
    """`python -m cmr_clip.modeling.convert_original_checkpoint` once ran the converter; modeling/ holds no CLI code
    now, and the old entry point says where the command went instead of exiting quietly with nothing written."""
    result = subprocess.run([sys.executable, "-m", "cmr_clip.modeling.convert_original_checkpoint", "--checkpoint", "x"],
                            capture_output=True, text=True)
    assert result.returncode == 1 and "cmr-clip convert-original" in result.stderr


def embed_reference(model, io):
    with torch.no_grad():
        vision = model.get_video_features(pixel_values_videos=io["pixel_values"])
        features = model.vision_model(pixel_values_videos=io["pixel_values"]).pooler_output
        text = model.get_text_features(input_ids=io["input_ids"], attention_mask=io["attention_mask"])
    video_embeds, text_embeds = vision.pooler_output, text.pooler_output
    cosine = torch.nn.functional.normalize(text_embeds, dim=-1) @ torch.nn.functional.normalize(video_embeds, dim=-1).T
    return {"video_features": features, "video_embeds": video_embeds, "text_embeds": text_embeds,
            "text_to_video_cosine": cosine}


def assert_matches_reference(outputs, io):
    for name, value in outputs.items():
        err = (value - io[name]).abs().max().item()
        assert err < ATOL, f"{name} differs from the reference by {err}"


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_converted_checkpoint_reproduces_reference(reference_io, attn_implementation):
    model = convert(STATE_DICT, CONFIG)
    model.set_attn_implementation(attn_implementation)
    assert model.config.vision_config._attn_implementation == attn_implementation
    assert_matches_reference(embed_reference(model, reference_io), reference_io)


def test_fixture_uses_fewer_frames_than_the_model_was_built_for(reference_io):
    model = convert(STATE_DICT, CONFIG)
    assert reference_io["pixel_values"].shape[1] < model.config.vision_config.num_frames


def test_saved_conversion_reloads_with_automodel(converted_dir, reference_io):
    assert (converted_dir / "model.safetensors").is_file()
    assert not list(converted_dir.glob("*.bin"))
    model = AutoModel.from_pretrained(converted_dir)
    assert isinstance(model, CMRCLIPModel) and not model.training
    assert_matches_reference(embed_reference(model, reference_io), reference_io)
    config = json.loads((converted_dir / "config.json").read_text())
    assert config["model_type"] == "cmr_clip" and config["text_pooling"] == "mean"
    assert config["vision_config"]["num_frames"] == 8 and config["vision_config"]["num_attention_heads"] == 2


def test_converter_cli_is_routed_through_cmr_clip_command(tmp_path, tokenizer_dir):
    from cmr_clip.cli import main

    assert main(["convert-original", "--checkpoint", str(STATE_DICT), "--config", str(CONFIG),
                 "--out", str(tmp_path / "out"), "--tokenizer", str(tokenizer_dir)]) == 0
    assert isinstance(AutoModel.from_pretrained(tmp_path / "out"), CMRCLIPModel)


def test_full_size_keys_map_onto_full_size_model():
    shapes = json.loads((FIXTURE / "full_size_keys.json").read_text())
    original = {k: torch.empty(v, device="meta") for k, v in shapes.items()}
    vision_config = infer_vision_config(original, {"arch_config": "base_patch16_224", "num_frames": 64}, None)
    assert (vision_config.image_size, vision_config.patch_size, vision_config.num_frames) == (224, 16, 64)
    assert (vision_config.hidden_size, vision_config.num_hidden_layers, vision_config.num_attention_heads) == (768, 12, 12)
    text_config = BertConfig(vocab_size=28996)  # BERT-base cased, as Bio_ClinicalBERT
    config = CMRCLIPConfig(vision_config=vision_config, text_config=text_config, projection_dim=512)
    with torch.device("meta"):
        model = CMRCLIPModel(config)
    converted = convert_state_dict(original)
    dropped = check_against_model(converted, model)
    assert sorted(dropped) == ["text_model.pooler.dense.bias", "text_model.pooler.dense.weight"]
    model_keys = set(model.state_dict())
    assert model_keys == set(converted) - set(dropped)  # every key used, nothing left over


def test_full_size_real_config_without_dims_builds(tmp_path):
    """The released config.json names an architecture instead of dimensions; the heads come from it."""
    shapes = json.loads((FIXTURE / "full_size_keys.json").read_text())
    original = {k: torch.empty(v, device="meta") for k, v in shapes.items()}
    config = infer_vision_config(original, {"arch_config": "base_patch16_224"}, None)
    assert config.num_attention_heads == 12
    with pytest.raises(CheckpointMismatchError, match="--num-heads"):
        infer_vision_config(original, {"arch_config": "custom"}, None)


def test_converter_lists_missing_unexpected_and_mismatched_keys(tmp_path):
    state = load_file(str(STATE_DICT))
    state.pop("video_model.blocks.1.timeattn.qkv.weight")
    state["video_model.extra_head.weight"] = torch.zeros(3)
    state["txt_proj.1.bias"] = torch.zeros(7)
    broken = tmp_path / "broken.safetensors"
    save_file(state, str(broken))
    with pytest.raises(CheckpointMismatchError) as err:
        convert(broken, CONFIG)
    message = str(err.value)
    assert "missing (1): video_model.blocks.1.timeattn.qkv.weight" in message  # named as the checkpoint names it
    assert "unexpected (1): video_model.extra_head.weight" in message
    assert "txt_proj.1.bias: checkpoint (7,) vs model (32,)" in message


def test_converter_reads_bin_weights_only_and_refuses_pickled_code(tmp_path, reference_io):
    state = load_file(str(STATE_DICT))
    state["text_model.embeddings.position_ids"] = torch.arange(64)[None]  # real .bin files carry it
    good = tmp_path / "pytorch_model.bin"
    torch.save(state, good)
    assert_matches_reference(embed_reference(convert(good, CONFIG), reference_io), reference_io)

    class Payload:
        def __reduce__(self):
            return (print, ("code ran",))

    evil = tmp_path / "evil.bin"
    with open(evil, "wb") as f:
        pickle.dump({"state_dict": Payload()}, f)
    with pytest.raises(CheckpointMismatchError, match="weights-only"):
        convert(evil, CONFIG)


def test_not_a_cmr_clip_checkpoint_is_refused(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"encoder.weight": torch.zeros(2, 2)}, str(path))
    with pytest.raises(CheckpointMismatchError, match="not a CMR-CLIP checkpoint"):
        convert(path, CONFIG)


def test_auto_classes_resolve_our_models(tmp_path):
    config = tiny_config()
    assert isinstance(AutoConfig.for_model("cmr_clip"), CMRCLIPConfig)
    model = AutoModel.from_config(config)
    assert isinstance(model, CMRCLIPModel)
    vision = AutoModel.from_config(config.vision_config)
    assert isinstance(vision, CMRCLIPVisionModel)
    vision.save_pretrained(tmp_path)
    assert isinstance(AutoModel.from_pretrained(tmp_path), CMRCLIPVisionModel)


def test_embedding_is_the_same_alone_and_in_a_batch():
    torch.manual_seed(0)
    model = CMRCLIPModel(tiny_config()).eval()
    videos = torch.randn(3, 6, 3, 16, 16)
    with torch.no_grad():
        batched = model.get_video_features(pixel_values_videos=videos).pooler_output
        alone = torch.cat([model.get_video_features(pixel_values_videos=v[None]).pooler_output for v in videos])
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=1e-5)

    ids = torch.tensor([[2, 5, 9, 11, 3, 0, 0], [2, 7, 8, 3, 0, 0, 0]])
    mask = (ids != 0).long()
    with torch.no_grad():
        padded = model.get_text_features(input_ids=ids, attention_mask=mask).pooler_output
        first = model.get_text_features(input_ids=ids[:1, :5], attention_mask=mask[:1, :5]).pooler_output
    torch.testing.assert_close(padded[:1], first, atol=1e-5, rtol=1e-5)  # padding does not change the embedding


@pytest.mark.parametrize("frames", [1, 3, 6])
def test_fewer_frames_than_num_frames(frames):
    model = CMRCLIPVisionModel(tiny_config().vision_config).eval()
    out = model(pixel_values_videos=torch.randn(2, frames, 3, 16, 16))
    assert out.last_hidden_state.shape == (2, 1 + frames * 4, 32)
    assert out.pooler_output.shape == (2, 32)


def test_too_many_frames_or_wrong_size_is_a_clear_error():
    model = CMRCLIPVisionModel(tiny_config().vision_config)
    with pytest.raises(ValueError, match="at most 6"):
        model(pixel_values_videos=torch.randn(1, 7, 3, 16, 16))
    with pytest.raises(ValueError, match="expects 3x16x16"):
        model(pixel_values_videos=torch.randn(1, 2, 3, 32, 32))
    with pytest.raises(ValueError, match="5 dimensions"):
        model(pixel_values_videos=torch.randn(2, 3, 16, 16))


def test_frame_order_matters():
    """Time attention and temporal embeddings make the embedding depend on frame order."""
    torch.manual_seed(0)
    model = CMRCLIPVisionModel(tiny_config().vision_config).eval()
    video = torch.randn(1, 6, 3, 16, 16)
    with torch.no_grad():
        a = model(pixel_values_videos=video).pooler_output
        b = model(pixel_values_videos=video.flip(1)).pooler_output
    assert (a - b).abs().max() > 1e-3


def test_sdpa_and_eager_agree_and_eager_returns_attention_maps():
    torch.manual_seed(0)
    config = tiny_config().vision_config
    sdpa = CMRCLIPVisionModel(config).eval()
    # A copy: `_from_config` sets the implementation on the config it is given, which `sdpa` reads at run time.
    eager = CMRCLIPVisionModel._from_config(copy.deepcopy(config), attn_implementation="eager").eval()
    eager.load_state_dict(sdpa.state_dict())
    assert (sdpa.config._attn_implementation, eager.config._attn_implementation) == ("sdpa", "eager")
    video = torch.randn(2, 5, 3, 16, 16)
    with torch.no_grad():
        out_sdpa = sdpa(pixel_values_videos=video)
        out_eager = eager(pixel_values_videos=video, output_attentions=True, output_time_attentions=True,
                          output_hidden_states=True)
    torch.testing.assert_close(out_sdpa.last_hidden_state, out_eager.last_hidden_state, atol=1e-5, rtol=1e-5)
    assert len(out_eager.attentions) == 2 and out_eager.attentions[0].shape == (2, 5, 2, 4, 5)
    assert out_eager.time_attentions[0].shape == (2, 4, 2, 5, 6)
    torch.testing.assert_close(out_eager.attentions[0].sum(-1), torch.ones(2, 5, 2, 4))
    assert len(out_eager.hidden_states) == 3


@pytest.mark.parametrize("max_keys, routed_per_layer", [(0, 0), (5, 1), (32, 2)])
def test_sdpa_on_a_cpu_routes_short_groups_to_eager_with_the_same_outputs_and_gradients(monkeypatch, max_keys,
                                                                                       routed_per_layer):
    """Frames of 2 x 2 patches (space groups: 5 keys with CLS) and 5 frames (time groups: 6 keys): without
    gradients, a group of at most CPU_EAGER_MAX_KEYS keys attends by matrix products, a longer one through SDPA;
    with gradients every group goes through SDPA (eager's backward would keep the weights). Both give the eager
    model's outputs and gradients. (The CLS query keeps SDPA here; compiled, see test_precision.)"""
    from cmr_clip.modeling import modeling_cmr_clip

    calls = []
    eager_forward = modeling_cmr_clip.eager_attention_forward

    def counted(*args, **kwargs):
        calls.append(args[1].shape)
        return eager_forward(*args, **kwargs)

    monkeypatch.setattr(modeling_cmr_clip, "CPU_EAGER_MAX_KEYS", max_keys)
    monkeypatch.setattr(modeling_cmr_clip, "eager_attention_forward", counted)
    torch.manual_seed(0)
    config = tiny_config().vision_config
    config.hidden_dropout_prob = config.attention_dropout = 0.0
    sdpa = CMRCLIPVisionModel(config).train()
    eager = CMRCLIPVisionModel._from_config(copy.deepcopy(config), attn_implementation="eager").train()
    eager.load_state_dict(sdpa.state_dict())
    assert (sdpa.config._attn_implementation, eager.config._attn_implementation) == ("sdpa", "eager")
    video = torch.randn(2, 5, 3, 16, 16)
    outputs = []
    for model in (sdpa, eager):
        calls.clear()
        with torch.no_grad():
            inference = model(pixel_values_videos=video).last_hidden_state
        if model is sdpa:
            assert len(calls) == routed_per_layer * config.num_hidden_layers, calls
        calls.clear()
        out = model(pixel_values_videos=video).last_hidden_state
        out.square().mean().backward()
        if model is sdpa:
            assert calls == [], calls
        torch.testing.assert_close(inference, out.detach(), atol=1e-5, rtol=1e-5)
        outputs.append(out.detach())
    torch.testing.assert_close(outputs[0], outputs[1], atol=1e-5, rtol=1e-5)
    for (name, p), q in zip(sdpa.named_parameters(), eager.parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_gradient_checkpointing_gives_same_loss_and_gradients():
    torch.manual_seed(0)
    config = tiny_config()
    config.vision_config.hidden_dropout_prob = 0.0
    config.text_config.hidden_dropout_prob = config.text_config.attention_probs_dropout_prob = 0.0
    plain = CMRCLIPModel(config).train()
    checkpointed = CMRCLIPModel(config).train()
    checkpointed.load_state_dict(plain.state_dict())
    checkpointed.activation_checkpointing_enable()
    assert checkpointed.vision_model.encoder.layers[0].gradient_checkpointing
    batch = dict(pixel_values_videos=torch.randn(3, 4, 3, 16, 16), input_ids=torch.randint(1, 60, (3, 8)),
                 return_loss=True)
    losses = []
    for model in (plain, checkpointed):
        loss = model(**batch).loss
        loss.backward()
        losses.append(loss.detach())
    torch.testing.assert_close(losses[0], losses[1])
    for (name, p), q in zip(plain.named_parameters(), checkpointed.parameters()):
        assert p.grad is not None, f"{name} got no gradient"
        torch.testing.assert_close(p.grad, q.grad, atol=1e-6, rtol=1e-5, msg=name)


def test_loss_decreases_on_a_tiny_batch():
    torch.manual_seed(0)
    model = CMRCLIPModel(tiny_config()).train()
    batch = dict(pixel_values_videos=torch.randn(4, 4, 3, 16, 16), input_ids=torch.randint(1, 60, (4, 8)),
                 return_loss=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(20):
        loss = model(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_release_loss_is_symmetric_infonce_at_fixed_temperature():
    torch.manual_seed(0)
    model = CMRCLIPModel(tiny_config()).eval()
    batch = dict(pixel_values_videos=torch.randn(3, 2, 3, 16, 16), input_ids=torch.randint(1, 60, (3, 6)))
    with torch.no_grad():
        out = model(**batch, return_loss=True)
    similarity = out.text_embeds @ out.video_embeds.T
    torch.testing.assert_close(out.logits_per_text, similarity / 0.05)
    torch.testing.assert_close(out.logits_per_video, out.logits_per_text.T)
    expected = -(similarity / 0.05).log_softmax(1).diag().mean() - (similarity / 0.05).log_softmax(0).diag().mean()
    torch.testing.assert_close(out.loss, expected)
    assert "logit_scale" not in dict(model.named_parameters())


def test_learnable_logit_scale_is_a_parameter_and_is_clamped():
    model = CMRCLIPModel(tiny_config(learnable_logit_scale=True, max_logit_scale=50.0))
    assert torch.isclose(model.logit_scale.detach(), torch.tensor(model.config.logit_scale_init_value))
    with torch.no_grad():
        model.logit_scale.fill_(10.0)
    assert model.logit_scale_value().item() == 50.0


@pytest.mark.parametrize("pooling", ["cls", "pooler"])
@pytest.mark.parametrize("projection", ["linear", "mlp"])
def test_other_poolings_and_projections(pooling, projection, tmp_path):
    model = CMRCLIPModel(tiny_config(text_pooling=pooling, projection_type=projection)).eval()
    ids = torch.randint(1, 60, (2, 5))
    with torch.no_grad():
        text = model.get_text_features(input_ids=ids).pooler_output
    assert text.shape == (2, 16)
    assert ("text_model.pooler.dense.weight" in model.state_dict()) == (pooling == "pooler")
    model.save_pretrained(tmp_path)
    reloaded = AutoModel.from_pretrained(tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(reloaded.get_text_features(input_ids=ids).pooler_output, text)


def test_long_text_is_cut_to_max_text_length():
    model = CMRCLIPModel(tiny_config(max_text_length=16)).eval()
    ids = torch.randint(1, 60, (1, 40))  # longer than BERT's 32 positions: would fail uncut
    with torch.no_grad():
        cut = model.get_text_features(input_ids=ids).pooler_output
        first = model.get_text_features(input_ids=ids[:, :16]).pooler_output
    torch.testing.assert_close(cut, first)


def test_time_attention_starts_as_no_op():
    config = tiny_config(vision={"time_init": "zeros"})
    model = CMRCLIPVisionModel(config.vision_config)
    layer = model.encoder.layers[0]
    assert layer.time_attn.qkv.weight.abs().sum() == 0
    hidden = torch.randn(2, 1 + 3 * 4, 32)
    output, _ = layer.time_attn(layer.time_layer_norm(hidden), 3)
    assert output.abs().max() == 0


def test_from_text_vision_pretrained_starts_as_the_image_vit(tmp_path):
    torch.manual_seed(0)
    vit = ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                             image_size=16, patch_size=8, layer_norm_eps=1e-6), add_pooling_layer=False)
    vit.save_pretrained(tmp_path / "vit")
    bert = BertModel(BertConfig(vocab_size=50, hidden_size=24, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=40))
    bert.save_pretrained(tmp_path / "bert")
    model = CMRCLIPModel.from_text_vision_pretrained(tmp_path / "bert", tmp_path / "vit", num_frames=4,
                                                     projection_dim=8).eval()
    vit, bert = vit.eval(), bert.eval()
    image = torch.randn(2, 3, 16, 16)
    ids = torch.randint(1, 50, (2, 6))
    with torch.no_grad():
        torch.testing.assert_close(model.vision_model(pixel_values_videos=image[:, None]).pooler_output,
                                   vit(pixel_values=image).last_hidden_state[:, 0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(model.text_model(ids).last_hidden_state, bert(ids).last_hidden_state)
    assert model.config.vision_config.num_frames == 4 and model.config.projection_dim == 8
