"""The contrastive task (`cmr-clip train`, `task="contrastive"`): CMR-CLIP learns from study-impression
pairs, negatives gathered across processes, retrieval recall on the validation split every epoch; from a
prepared corpus or, with `streaming`, from the studies read while training."""

from __future__ import annotations

from pathlib import Path

import torch
from accelerate import Accelerator
from transformers import AutoTokenizer, BertConfig, ViTModel

from ...data.collate import ImpressionTokenizer, StudyCollator
from ...data.corpus import corpus_video_shape, load_prepared
from ...data.streaming import open_streams, process_part
from ...embeddings import embed_batches
from ...evaluation.retrieval import retrieval_metrics
from ...modeling import CMRCLIPConfig, CMRCLIPModel, CMRCLIPVisionConfig
from ...modeling.modeling_cmr_clip import load_vit_weights
from ...processing import CMRCLIPProcessor
from ..config import TrainConfig
from ..losses import gathered_contrastive_loss, sentence_contrastive_loss, sentence_separation_loss
from ..loop import TrainData
from .study_text import (
    augmentation,
    check_train_studies,
    check_video_shape,
    paired_train_data,
    save_trained,
    validation_loaders,
)


def resolve_tokenizer(config: TrainConfig):
    source = config.init_from or config.tokenizer or config.text_model
    if source is None:
        candidate = Path(config.data_dir) / "tokenizer"
        if not candidate.is_dir():
            raise ValueError(
                "No tokenizer: give `tokenizer`, `text_model` or `init_from`, or put one in the corpus's tokenizer/."
            )
        source = str(candidate)
    return AutoTokenizer.from_pretrained(source)


def build_model(config: TrainConfig, tokenizer, num_frames: int, image_size: int) -> CMRCLIPModel:
    if config.init_from:
        model = CMRCLIPModel.from_pretrained(config.init_from, attn_implementation=config.attn_implementation)
        check_video_shape(model.config.vision_config, num_frames, image_size, config.init_from)
        return model.train()
    head = dict(projection_dim=config.projection_dim, text_pooling=config.text_pooling,
                projection_type=config.projection_type, learnable_logit_scale=config.learnable_logit_scale,
                temperature=config.temperature, max_text_length=config.max_text_length)
    vision_fields = {**config.vision, "num_frames": num_frames, "image_size": image_size}
    if config.text_model:
        model = CMRCLIPModel.from_text_vision_pretrained(
            config.text_model, config.vision_model, num_frames=num_frames,
            vision_config=CMRCLIPVisionConfig(**vision_fields), **head,
        )
    else:
        text_config = BertConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                                 max_position_embeddings=max(config.max_text_length, 32), **config.text)
        model = CMRCLIPModel(CMRCLIPConfig(vision_config=vision_fields, text_config=text_config, **head))
        if config.vision_model:
            load_vit_weights(model.vision_model, ViTModel.from_pretrained(config.vision_model))
    model.set_attn_implementation(config.attn_implementation)
    return model.train()


def save_final(model: CMRCLIPModel, tokenizer, study_processor, config: TrainConfig, metrics: dict,
               state_dict: dict | None = None) -> None:
    """The trained model, its processor (the corpus's study processor and the tokenizer) and metrics."""
    save_trained(model, CMRCLIPProcessor(feature_extractor=study_processor, tokenizer=tokenizer), config, metrics,
                 state_dict)


def stack_padded(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Two (n, length) token tensors as one, the shorter padded on the right with 0 (masked out)."""
    length = max(first.shape[1], second.shape[1])
    pad = lambda t: torch.nn.functional.pad(t, (0, length - t.shape[1]))  # noqa: E731
    return torch.cat([pad(first), pad(second)])


class ContrastiveTask:
    """CMR-CLIP's contrastive training: study-impression pairs, negatives gathered across processes,
    retrieval recall on the validation split."""

    name = "contrastive"

    def __init__(self, config: TrainConfig):
        self.config = config

    def open_corpus(self):
        if self.config.streaming:
            return open_streams(self.config)
        return load_prepared(self.config.data_dir)

    def build(self, corpus, study_processor) -> torch.nn.Module:
        num_frames, image_size = corpus_video_shape(corpus["train"])
        self.tokenizer = resolve_tokenizer(self.config)
        self.collator = StudyCollator(study_processor, ImpressionTokenizer(self.tokenizer, self.config.max_text_length))
        return build_model(self.config, self.tokenizer, num_frames, image_size)

    def train_data(self, corpus, accelerator: Accelerator) -> TrainData:
        if not self.config.streaming:
            return paired_train_data(corpus, self.config)
        # A stream's length is its number of studies (one shard each); failing studies are found only when read.
        studies = corpus["train"].n_shards
        check_train_studies(studies)
        return TrainData(process_part(corpus["train"], self.config, accelerator, augmentation(self.config)), studies,
                         drop_last=True)

    def eval_loaders(self, corpus) -> dict:
        return validation_loaders(corpus, self.config, self.collator)

    def loss(self, model, unwrapped, batch) -> torch.Tensor:
        input_ids, attention_mask = batch["input_ids"], batch["attention_mask"]
        studies = len(input_ids)  # the rows after them are the drawn sentences
        if "sentence_input_ids" in batch:  # the drawn sentences ride along in the same text batch
            input_ids, attention_mask = stack_padded(input_ids, batch["sentence_input_ids"]), stack_padded(
                attention_mask, batch["sentence_attention_mask"])
        out = model(pixel_values_videos=batch["pixel_values_videos"], input_ids=input_ids, attention_mask=attention_mask)
        text, video = out.text_embeds.float(), out.video_embeds.float()
        scale = unwrapped.logit_scale_value().to(text.device)
        loss = gathered_contrastive_loss(text[:studies], video, scale)
        if "sentence_input_ids" in batch and self.config.sentence_loss:
            loss = loss + self.config.sentence_loss * sentence_contrastive_loss(
                text[studies:], video, batch["sentence_keys"], batch["study_sentence_keys"], scale)
        if "sentence_input_ids" in batch and self.config.sentence_separation:
            loss = loss + self.config.sentence_separation * sentence_separation_loss(
                text[studies:], batch["sentence_keys"])
        return loss

    def evaluate(self, model, loaders: dict, accelerator: Accelerator) -> dict[str, float]:
        if "validation" not in loaders:
            return {}
        embeddings = embed_batches(model, loaders["validation"], accelerator)
        return retrieval_metrics(embeddings["text"], embeddings["video"])

    def results(self, model, loaders: dict, accelerator: Accelerator, summary: dict) -> dict:
        return summary

    def save(self, model, study_processor, metrics: dict, state_dict: dict | None = None) -> None:
        save_final(model, self.tokenizer, study_processor, self.config, metrics, state_dict)
