"""CMR-TARGET: a causal language model that writes a cardiac MRI report impression, sentence by sentence,
from CMR-CLIP's video features.

The video tower's tokens are pooled (the CLS feature, and optionally one token per run of frames),
projected to the decoder's width and put in place of the video placeholder tokens at the start of the
sequence; the decoder is any `AutoModelForCausalLM`. Sentences are separated by a dedicated token, so that
generation can stop after a number of sentences and its output splits into sentences exactly.
"""

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.cache_utils import Cache
from transformers.generation import StoppingCriteria, StoppingCriteriaList
from transformers.utils import ModelOutput

from .configuration_cmr_target import CMRTargetConfig
from .modeling_cmr_clip import CMRCLIPModel, CMRCLIPVisionModel


@dataclass
class CMRTargetOutput(ModelOutput):
    r"""
    loss (`torch.FloatTensor`, *optional*): the language-model loss (next-token cross-entropy on the
        impression tokens) when `labels` are given.
    logits (`torch.FloatTensor` of shape `(batch_size, sequence_length, vocab_size)`): next-token scores.
    cache (`Cache`, *optional*): the decoder's key-value cache.
    video_tokens (`torch.FloatTensor` of shape `(batch_size, num_video_tokens, hidden_size)`, *optional*):
        the projected video tokens fed to the decoder (on the step that computed them).
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    cache: Cache | None = None
    video_tokens: torch.FloatTensor | None = None


class SentenceStoppingCriteria(StoppingCriteria):
    """Stops a sequence once it has generated `max_sentences` sentence separators after the prompt (its
    `max_sentences` sentences are complete and the next would begin)."""

    def __init__(self, sentence_token_id: int, max_sentences: int, prompt_length: int):
        if max_sentences < 1:
            raise ValueError(f"max_sentences must be at least 1, not {max_sentences}.")
        self.sentence_token_id, self.max_sentences, self.prompt_length = sentence_token_id, max_sentences, prompt_length

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        generated = input_ids[:, self.prompt_length :]
        return (generated == self.sentence_token_id).sum(-1) >= self.max_sentences


def build_projector(kind: str, in_dim: int, out_dim: int) -> nn.Module:
    if kind == "linear":
        return nn.Linear(in_dim, out_dim)
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))


class CMRTargetPreTrainedModel(PreTrainedModel):
    config: CMRTargetConfig
    base_model_prefix = "cmr_target"
    main_input_name = "pixel_values_videos"
    input_modalities = ("video", "text")
    supports_gradient_checkpointing = True
    _no_split_modules = ["CMRCLIPVisionEmbeddings", "CMRCLIPVisionLayer"]
    _supports_sdpa = True
    _supports_attention_backend = True

    def _init_weights(self, module: nn.Module) -> None:
        # The towers initialise themselves (their own `_init_weights` run from their `post_init`); only the
        # projector is ours.
        if isinstance(module, nn.Linear) and any(module is m for m in self._projector_modules()):
            init.trunc_normal_(module.weight, std=self.config.initializer_range)
            if module.bias is not None:
                init.zeros_(module.bias)

    def _projector_modules(self):
        projector = getattr(self, "video_projector", None)
        return list(projector.modules()) if projector is not None else []


class CMRTargetForConditionalGeneration(CMRTargetPreTrainedModel, GenerationMixin):
    """CMR-TARGET: `forward(pixel_values_videos, input_ids, labels)` gives the language-model loss;
    `generate(pixel_values_videos, ...)` drafts impressions (greedy, beam search or sampling, with a KV
    cache); `max_sentences` stops each draft after that many sentences."""

    # `generate` treats the main input as the prompt: the token ids, with the studies as a model kwarg.
    main_input_name = "input_ids"

    def __init__(self, config: CMRTargetConfig):
        super().__init__(config)
        self.vision_model = CMRCLIPVisionModel._from_config(config.vision_config)
        self.video_projector = build_projector(
            config.projector_type, config.vision_config.hidden_size, config.text_config.hidden_size
        )
        self.language_model = AutoModelForCausalLM.from_config(config.text_config)
        self.post_init()
        if config.freeze_vision:
            self.vision_model.requires_grad_(False)

    @classmethod
    def from_cmr_clip(
        cls,
        cmr_clip: str | Path | PreTrainedModel,
        decoder: str | Path | dict | None = None,
        *,
        video_token_id: int,
        sentence_token_id: int,
        vocab_size: int | None = None,
        **config_fields,
    ) -> "CMRTargetForConditionalGeneration":
        """A CMR-TARGET whose video tower is a trained CMR-CLIP's (a directory, Hub id or `CMRCLIPModel`).

        `decoder`: a pretrained causal LM (name or directory; its weights are kept), a dict of config fields
        for a fresh decoder (`model_type` defaults to "gpt2"), or None for a fresh small GPT-2. `vocab_size`
        is the decoder tokenizer's size once the video and sentence tokens are added: the embeddings are
        resized to it.
        """
        clip = cmr_clip if isinstance(cmr_clip, PreTrainedModel) else CMRCLIPModel.from_pretrained(cmr_clip)
        vision = clip.vision_model
        pretrained_decoder = isinstance(decoder, (str, Path))
        if pretrained_decoder:
            text_config = AutoConfig.from_pretrained(decoder)
        else:
            fields = dict(decoder or {})
            model_type = fields.pop("model_type", "gpt2")
            text_config = AutoConfig.for_model(model_type, **fields)
        if vocab_size is not None and not pretrained_decoder:
            text_config.vocab_size = vocab_size
        config = CMRTargetConfig(
            vision_config=vision.config.to_dict(), text_config=text_config.to_dict(),
            video_token_id=video_token_id, sentence_token_id=sentence_token_id, **config_fields,
        )
        model = cls(config)
        model.vision_model.load_state_dict(vision.state_dict())
        if pretrained_decoder:
            model.language_model = AutoModelForCausalLM.from_pretrained(decoder)
            if vocab_size is not None and vocab_size != model.language_model.get_input_embeddings().num_embeddings:
                model.language_model.resize_token_embeddings(vocab_size)
            model.config.text_config = model.language_model.config
        if config.freeze_vision:
            model.vision_model.requires_grad_(False)
        return model

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.language_model.get_output_embeddings()

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_output_embeddings(value)

    def get_decoder(self) -> nn.Module:
        return self.language_model

    def get_video_features(self, pixel_values_videos: torch.Tensor) -> torch.Tensor:
        """The study's video tokens in the decoder's width: `(batch, num_video_tokens, hidden_size)`."""
        hidden = self.vision_model(pixel_values_videos=pixel_values_videos).last_hidden_state
        tokens = [hidden[:, :1]]
        if self.config.video_token_pooling == "cls_frames":
            batch, num_frames = pixel_values_videos.shape[:2]
            per_frame = hidden[:, 1:].reshape(batch, num_frames, -1, hidden.shape[-1]).mean(2)  # (B, T, D)
            pooled = nn.functional.adaptive_avg_pool1d(per_frame.transpose(1, 2), self.config.num_frame_tokens)
            tokens.append(pooled.transpose(1, 2))
        return self.video_projector(torch.cat(tokens, dim=1))

    def _merge_video_tokens(self, input_ids: torch.LongTensor, pixel_values_videos: torch.Tensor) -> tuple:
        embeds = self.get_input_embeddings()(input_ids)
        video_tokens = self.get_video_features(pixel_values_videos).to(embeds.dtype)
        placeholders = input_ids == self.config.video_token_id
        expected = video_tokens.shape[0] * video_tokens.shape[1]
        if int(placeholders.sum()) != expected:
            raise ValueError(
                f"input_ids hold {int(placeholders.sum())} video placeholder tokens (id {self.config.video_token_id}) "
                f"for {video_tokens.shape[0]} studies of {video_tokens.shape[1]} video tokens each ({expected}); "
                "build inputs with the model's processor."
            )
        embeds = embeds.masked_scatter(placeholders.unsqueeze(-1), video_tokens)
        return embeds, video_tokens

    def forward(
        self,
        pixel_values_videos: torch.Tensor | None = None,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> CMRTargetOutput:
        r"""
        pixel_values_videos (`torch.FloatTensor` of shape `(batch_size, frames, 3, height, width)`, *optional*):
            The studies, as `CMRStudyProcessor` makes them; needed whenever `input_ids` hold video placeholders
            (the first step of generation, and training).
        input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`):
            `num_video_tokens` placeholders, then the impression tokens; see `CMRTargetProcessor`.
        labels (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
            Target token ids aligned with `input_ids` (shifted inside), -100 where no loss is taken.
        """
        video_tokens = None
        if inputs_embeds is None:
            if input_ids is None:
                raise ValueError("Pass input_ids (with video placeholders first) or inputs_embeds.")
            if pixel_values_videos is not None:
                inputs_embeds, video_tokens = self._merge_video_tokens(input_ids, pixel_values_videos)
            else:
                # Checked only without a cache: decoding steps (one new token each) skip the device sync.
                if cache is None and bool((input_ids == self.config.video_token_id).any()):
                    raise ValueError("input_ids hold video placeholders but no pixel_values_videos were given.")
                inputs_embeds = self.get_input_embeddings()(input_ids)
        if position_ids is None and attention_mask is not None and cache is None:
            # As `generate` derives them, so that padded training batches and generation agree.
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        outputs = self.language_model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            labels=labels,
            use_cache=use_cache,
            logits_to_keep=logits_to_keep,
            **kwargs,
        )
        return CMRTargetOutput(loss=outputs.loss, logits=outputs.logits, cache=outputs.cache, video_tokens=video_tokens)

    def prompt_ids(self, batch_size: int, device: torch.device | None = None) -> torch.LongTensor:
        """The generation prompt: the video placeholders, then the decoder's start token when it has one."""
        ids = [self.config.video_token_id] * self.config.num_video_tokens
        bos = self.config.text_config.bos_token_id
        if bos is not None:
            ids.append(bos)
        return torch.tensor([ids] * batch_size, dtype=torch.long, device=device or self.device)

    @torch.no_grad()
    def generate(
        self,
        pixel_values_videos: torch.Tensor | None = None,
        input_ids: torch.LongTensor | None = None,
        max_sentences: int | None = None,
        stopping_criteria: StoppingCriteriaList | None = None,
        **kwargs,
    ) -> torch.LongTensor:
        """Draft impressions for `pixel_values_videos` (`(batch, frames, 3, H, W)`). Without `input_ids`
        the prompt is the video placeholders and the start token; the returned ids include that prompt
        (`CMRTargetProcessor.decode_sentences` drops it). `max_sentences` (default `config.max_sentences`)
        stops each draft after that many sentences; every other keyword goes to `GenerationMixin.generate`
        (`num_beams`, `do_sample`, `max_new_tokens`, ...)."""
        if input_ids is None:
            if pixel_values_videos is None:
                raise ValueError("generate needs pixel_values_videos (or input_ids with inputs_embeds).")
            input_ids = self.prompt_ids(pixel_values_videos.shape[0], pixel_values_videos.device)
            kwargs.setdefault("attention_mask", torch.ones_like(input_ids))
        max_sentences = max_sentences if max_sentences is not None else self.config.max_sentences
        if max_sentences is not None:
            stopping_criteria = StoppingCriteriaList(stopping_criteria or [])
            stopping_criteria.append(
                SentenceStoppingCriteria(self.config.sentence_token_id, max_sentences, input_ids.shape[1])
            )
        return super().generate(
            input_ids=input_ids, pixel_values_videos=pixel_values_videos, stopping_criteria=stopping_criteria, **kwargs
        )


__all__ = ["CMRTargetForConditionalGeneration", "CMRTargetOutput", "CMRTargetPreTrainedModel", "SentenceStoppingCriteria"]
