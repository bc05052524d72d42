"""CMR-TARGET: the language-model loss, generation (greedy, beam, sampling; with and without the KV cache),
sentence-by-sentence stopping and decoding, training and generation agreeing under padding, save/reload
with Auto classes, and building from a CMR-CLIP."""

import pytest
import torch
from safetensors.torch import load_file
from target_support import IMPRESSIONS, random_videos, tiny_target
from test_zero_shot_support import save_random_model
from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText, AutoProcessor

from cmr_clip import CMRCLIPModel, CMRTargetConfig, CMRTargetForConditionalGeneration, CMRTargetProcessor
from cmr_clip.processing import CMRStudyProcessor, split_sentences


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    model, processor = tiny_target(tmp_path_factory.mktemp("target"))
    return model.eval(), processor


def test_loss_is_next_token_cross_entropy_on_impression_tokens(target):
    model, processor = target
    batch = processor.encode_text(IMPRESSIONS[:3])
    videos = random_videos(3)
    out = model(pixel_values_videos=videos, **batch)
    logits, labels = out.logits[:, :-1], batch["labels"][:, 1:]
    expected = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    prompt = len(processor.prompt_ids())
    assert (batch["labels"][:, :prompt] == -100).all()
    assert out.video_tokens.shape == (3, model.config.num_video_tokens, model.config.text_config.hidden_size)


def test_video_changes_the_loss(target):
    model, processor = target
    batch = processor.encode_text(IMPRESSIONS[:2])
    a = model(pixel_values_videos=random_videos(2, seed=0), **batch).loss
    b = model(pixel_values_videos=random_videos(2, seed=1), **batch).loss
    assert a.item() != pytest.approx(b.item(), abs=1e-7)


def test_padded_batch_gives_each_impression_its_own_logits(target):
    """Right padding with position ids from the attention mask: a padded row equals the row alone."""
    model, processor = target
    videos = random_videos(2)
    batch = processor.encode_text([IMPRESSIONS[0], IMPRESSIONS[1]])
    together = model(pixel_values_videos=videos, **batch).logits
    for i, text in enumerate(IMPRESSIONS[:2]):
        alone_batch = processor.encode_text([text])
        alone = model(pixel_values_videos=videos[i : i + 1], **alone_batch).logits[0]
        torch.testing.assert_close(together[i, : alone.shape[0]], alone, atol=1e-5, rtol=1e-5)


def test_greedy_generation_is_the_same_with_and_without_kv_cache_and_deterministic(target):
    model, _ = target
    videos = random_videos(2, seed=3)
    cached = model.generate(videos, max_new_tokens=12, do_sample=False)
    uncached = model.generate(videos, max_new_tokens=12, do_sample=False, use_cache=False)
    assert torch.equal(cached, uncached)
    assert torch.equal(cached, model.generate(videos, max_new_tokens=12, do_sample=False))


def test_greedy_generation_follows_teacher_forced_argmax(target):
    """Each greedy token is the argmax of a teacher-forced forward over the sequence so far: generation and
    training compute the same model."""
    model, processor = target
    videos = random_videos(1, seed=4)
    generated = model.generate(videos, max_new_tokens=6, do_sample=False, min_new_tokens=6)
    prompt = len(processor.prompt_ids())
    logits = model(pixel_values_videos=videos, input_ids=generated, attention_mask=torch.ones_like(generated)).logits
    logits[..., processor.tokenizer.eos_token_id] = float("-inf")  # min_new_tokens forbids the end token
    assert torch.equal(logits[0, prompt - 1 : -1].argmax(-1), generated[0, prompt:])


def test_beam_search_and_sampling_run_with_the_cache(target):
    model, _ = target
    videos = random_videos(2, seed=5)
    beams = model.generate(videos, max_new_tokens=8, num_beams=3, num_return_sequences=2)
    assert beams.shape[0] == 4
    torch.manual_seed(0)
    first = model.generate(videos, max_new_tokens=8, do_sample=True, top_k=10)
    torch.manual_seed(0)
    assert torch.equal(first, model.generate(videos, max_new_tokens=8, do_sample=True, top_k=10))


def test_generation_stops_after_max_sentences(target):
    """A decoder whose every step prefers the separator: one sentence with max_sentences=1, two with 2."""
    model, processor = target
    sep = processor.sentence_token_id
    with torch.no_grad():
        model.language_model.lm_head.weight.data = model.language_model.lm_head.weight.data.clone()
        model.language_model.lm_head.weight.data[sep] += 50.0 * model.language_model.lm_head.weight.data[sep].sign()
    try:
        videos = random_videos(1)
        ids = model.generate(videos, max_new_tokens=30, do_sample=False, max_sentences=2)
        prompt = len(processor.prompt_ids())
        assert int((ids[0, prompt:] == sep).sum()) == 2
        ids = model.generate(videos, max_new_tokens=30, do_sample=False, max_sentences=1)
        assert int((ids[0, prompt:] == sep).sum()) == 1
    finally:
        model.language_model.tie_weights()
    with pytest.raises(ValueError, match="max_sentences must be at least 1"):
        model.generate(videos, max_new_tokens=3, max_sentences=0)


def test_processor_round_trip_and_sentences(target, tmp_path):
    _, processor = target
    batch = processor.encode_text(IMPRESSIONS)
    assert processor.decode_sentences(batch["input_ids"]) == [split_sentences(t) for t in IMPRESSIONS]
    processor.save_pretrained(tmp_path)
    again = AutoProcessor.from_pretrained(tmp_path)
    assert isinstance(again, CMRTargetProcessor) and again.num_video_tokens == processor.num_video_tokens
    assert torch.equal(again.encode_text(IMPRESSIONS)["input_ids"], batch["input_ids"])


@pytest.mark.parametrize("text, sentences", [
    ("Normal LV size (LVEF 55%). No LGE.", ["Normal LV size (LVEF 55%).", "No LGE."]),
    ("Aortic root 3.5 cm at 1.5 T. Small effusion.", ["Aortic root 3.5 cm at 1.5 T.", "Small effusion."]),
    ("  Dilated RV.\nNo effusion.  ", ["Dilated RV.", "No effusion."]),
    ("One sentence without a stop", ["One sentence without a stop"]),
    ("1. Normal LV. No LGE.\n2) Small effusion, e.g. trace.", ["Normal LV.", "No LGE.", "Small effusion, e.g. trace."]),
    ("1. Normal cardiac MRI. 2. No LGE. 3. Aortic root 30 mm.", ["Normal cardiac MRI.", "No LGE.", "Aortic root 30 mm."]),
    ("", []),
    # Dictated reports in lower case: each sentence still its own.
    ("normal lv size and function. no lge. small pericardial effusion.",
     ["normal lv size and function.", "no lge.", "small pericardial effusion."]),
    # Abbreviations do not end a sentence, whatever follows them.
    ("consistent with amyloid, e.g. diffuse subendocardial lge. no effusion.",
     ["consistent with amyloid, e.g. diffuse subendocardial lge.", "no effusion."]),
    ("LVEF approx. 45 %. Patchy LGE, e.g. LGE in the septum. Max. wall thickness 16 mm (i.e. LVH). Done.",
     ["LVEF approx. 45 %.", "Patchy LGE, e.g. LGE in the septum.", "Max. wall thickness 16 mm (i.e. LVH).", "Done."]),
])
def test_split_sentences(text, sentences):
    assert split_sentences(text) == sentences


def test_tokenizer_without_the_special_tokens_is_refused():
    from cmr_clip.data.prepare import train_report_tokenizer

    with pytest.raises(ValueError, match="add_special_tokens"):
        CMRTargetProcessor(tokenizer=train_report_tokenizer(IMPRESSIONS, vocab_size=300),
                           feature_extractor=CMRStudyProcessor())


def test_placeholder_count_mismatch_is_explained(target):
    model, processor = target
    batch = processor.encode_text(IMPRESSIONS[:1])
    batch["input_ids"][0, 0] = processor.tokenizer.bos_token_id
    with pytest.raises(ValueError, match="video placeholder tokens"):
        model(pixel_values_videos=random_videos(1), **batch)
    with pytest.raises(ValueError, match="no pixel_values_videos"):
        model(input_ids=processor.encode_text(IMPRESSIONS[:1])["input_ids"])


def test_save_reload_with_auto_classes_in_safetensors(target, tmp_path):
    model, processor = target
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file() and not list(tmp_path.glob("*.bin"))
    assert AutoConfig.from_pretrained(tmp_path).model_type == "cmr_target"
    for auto in (AutoModel, AutoModelForImageTextToText):
        again = auto.from_pretrained(tmp_path)
        assert isinstance(again, CMRTargetForConditionalGeneration)
        assert again.language_model.lm_head.weight.data_ptr() == again.language_model.get_input_embeddings().weight.data_ptr()
    videos = random_videos(2, seed=7)
    assert torch.equal(again.generate(videos, max_new_tokens=8), model.generate(videos, max_new_tokens=8))
    saved = load_file(tmp_path / "model.safetensors")
    assert any(k.startswith("vision_model.") for k in saved) and any(k.startswith("video_projector.") for k in saved)


def test_from_cmr_clip_carries_the_trained_video_tower_and_freezes_it(tmp_path):
    model, processor = tiny_target(tmp_path, seed=2)
    clip = CMRCLIPModel.from_pretrained(save_random_model(tmp_path / "again", seed=2))
    for name, value in clip.vision_model.state_dict().items():
        assert torch.equal(model.vision_model.state_dict()[name], value), name
    assert not any(p.requires_grad for p in model.vision_model.parameters())
    model.train()
    batch = processor.encode_text(IMPRESSIONS[:2])
    model(pixel_values_videos=random_videos(2), **batch).loss.backward()
    assert all(p.grad is None for p in model.vision_model.parameters())
    assert all(p.grad is not None for p in model.video_projector.parameters())
    assert model.language_model.get_input_embeddings().weight.grad is not None


def test_unfrozen_tower_trains_and_cls_pooling_gives_one_token(tmp_path):
    model, processor = tiny_target(tmp_path, video_token_pooling="cls", freeze_vision=False)
    assert model.config.num_video_tokens == 1 and processor.num_video_tokens == 1
    batch = processor.encode_text(IMPRESSIONS[:2])
    model(pixel_values_videos=random_videos(2), **batch).loss.backward()
    assert model.vision_model.embeddings.patch_embedding.weight.grad is not None


def test_config_validation():
    from huggingface_hub.errors import StrictDataclassError

    with pytest.raises(StrictDataclassError, match="video_token_pooling"):
        CMRTargetConfig(video_token_pooling="mean")
    with pytest.raises(StrictDataclassError, match="num_frame_tokens must be positive"):
        CMRTargetConfig(num_frame_tokens=0)
    assert CMRTargetConfig(video_token_pooling="cls_frames", num_frame_tokens=8).num_video_tokens == 9
    assert CMRTargetConfig().text_config.model_type == "gpt2"


def test_from_cmr_clip_keeps_a_pretrained_decoder(tmp_path):
    """A pretrained causal LM directory as the decoder: its weights are kept, the embeddings grow by the added
    special tokens, and input and output embeddings stay tied."""
    from target_support import tiny_report_tokenizer
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = tiny_report_tokenizer()
    torch.manual_seed(3)
    decoder = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer) - 3, n_embd=32, n_layer=1, n_head=2,
                                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id))
    decoder.save_pretrained(tmp_path / "decoder")
    model = CMRTargetForConditionalGeneration.from_cmr_clip(
        save_random_model(tmp_path / "clip"), tmp_path / "decoder",
        video_token_id=tokenizer.convert_tokens_to_ids("<|video|>"),
        sentence_token_id=tokenizer.convert_tokens_to_ids("<|sep|>"), vocab_size=len(tokenizer))
    lm = model.language_model
    assert lm.get_input_embeddings().num_embeddings == len(tokenizer) == model.config.text_config.vocab_size
    old = decoder.get_input_embeddings().weight
    assert torch.equal(lm.get_input_embeddings().weight[: old.shape[0]], old)
    assert torch.equal(lm.transformer.h[0].attn.c_attn.weight, decoder.transformer.h[0].attn.c_attn.weight)
    assert lm.lm_head.weight.data_ptr() == lm.get_input_embeddings().weight.data_ptr()
    model.save_pretrained(tmp_path / "target")
    again = CMRTargetForConditionalGeneration.from_pretrained(tmp_path / "target")
    assert torch.equal(again.language_model.get_input_embeddings().weight, lm.get_input_embeddings().weight)
