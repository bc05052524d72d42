"""The report task of `cmr-clip train --task report`: CMR-TARGET learns to write a study's impression from
its video features by teacher forcing, on the same prepared corpus and Accelerate loop as CMR-CLIP."""

from __future__ import annotations

import math
from functools import partial

import torch
from accelerate import Accelerator
from transformers import AutoTokenizer

from ...data.collate import StudyCollator
from ...data.corpus import corpus_video_shape, load_prepared
from ...data.prepare import train_report_tokenizer
from ...modeling import CMRTargetForConditionalGeneration
from ...processing import CMRTargetProcessor
from ..config import TrainConfig
from ..loop import TrainData
from ..losses import tokens_per_process
from .study_text import check_video_shape, paired_train_data, save_trained, validation_loaders


class ReportTask:
    """CMR-TARGET from a trained CMR-CLIP (`cmr_clip_model`) or a CMR-TARGET to continue (`init_from`);
    validation loss and perplexity every epoch."""

    name = "report"

    def __init__(self, config: TrainConfig):
        if config.sentence_keep < 1:
            raise ValueError("sentence_keep < 1 shows CMR-CLIP parts of impressions; CMR-TARGET learns to write whole "
                             "impressions: leave --sentence-keep at 1 for --task report.")
        if config.sentence_loss or config.sentence_separation:
            raise ValueError("sentence_loss and sentence_separation are CMR-CLIP (contrastive) losses; leave "
                             "--sentence-loss and --sentence-separation at 0 for --task report.")
        self.config = config

    def open_corpus(self):
        if self.config.streaming:
            raise ValueError("--streaming trains CMR-CLIP (the contrastive task); prepare a corpus for --task report.")
        return load_prepared(self.config.data_dir)

    def build(self, corpus, study_processor) -> CMRTargetForConditionalGeneration:
        config = self.config
        if config.init_from:
            model = CMRTargetForConditionalGeneration.from_pretrained(config.init_from)
            tokenizer = CMRTargetProcessor.from_pretrained(config.init_from).tokenizer
        elif config.cmr_clip_model:
            tokenizer = self._tokenizer(corpus)
            model = CMRTargetForConditionalGeneration.from_cmr_clip(
                config.cmr_clip_model, config.decoder or self._decoder_fields(tokenizer),
                video_token_id=tokenizer.convert_tokens_to_ids("<|video|>"),
                sentence_token_id=tokenizer.convert_tokens_to_ids("<|sep|>"), vocab_size=len(tokenizer),
                video_token_pooling=config.video_token_pooling, num_frame_tokens=config.num_frame_tokens,
                freeze_vision=config.freeze_vision,
            )
            if tokenizer.pad_token_id is not None:
                model.config.text_config.pad_token_id = tokenizer.pad_token_id
            model.generation_config.pad_token_id = tokenizer.pad_token_id
        else:
            raise ValueError("--task report needs --cmr-clip-model (a trained CMR-CLIP) or --init-from (a CMR-TARGET).")
        num_frames, image_size = corpus_video_shape(corpus["train"])
        check_video_shape(model.config.vision_config, num_frames, image_size, config.init_from or config.cmr_clip_model)
        self.processor = CMRTargetProcessor(tokenizer=tokenizer, feature_extractor=study_processor,
                                            num_video_tokens=model.config.num_video_tokens)
        self.collator = StudyCollator(study_processor, partial(self.processor.encode_text, max_length=config.max_text_length))
        return model.train()

    def _tokenizer(self, corpus):
        if self.config.decoder:
            tokenizer = AutoTokenizer.from_pretrained(self.config.decoder)
        else:
            tokenizer = train_report_tokenizer(list(corpus["train"]["impression"]), self.config.report_vocab_size)
        CMRTargetProcessor.add_special_tokens(tokenizer)
        return tokenizer

    def _decoder_fields(self, tokenizer) -> dict:
        fields = dict(n_embd=256, n_layer=4, n_head=4, n_positions=max(256, self.config.max_text_length + 64))
        fields.update(self.config.decoder_config)
        fields.update(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                      pad_token_id=tokenizer.pad_token_id)
        return fields

    def train_data(self, corpus, accelerator: Accelerator) -> TrainData:
        return paired_train_data(corpus, self.config)

    def eval_loaders(self, corpus) -> dict:
        return validation_loaders(corpus, self.config, self.collator)

    def loss(self, model, unwrapped, batch) -> torch.Tensor:
        return model(pixel_values_videos=batch["pixel_values_videos"], input_ids=batch["input_ids"],
                     attention_mask=batch["attention_mask"], labels=batch["labels"],
                     num_items_in_batch=tokens_per_process(batch["labels"])).loss

    @torch.no_grad()
    def evaluate(self, model, loaders: dict, accelerator: Accelerator) -> dict[str, float]:
        """Token-weighted validation loss over every process's studies, and its perplexity. Per-study sums
        are gathered with `gather_for_metrics`, which drops the studies repeated to even out the last batch."""
        if "validation" not in loaders:
            return {}
        model.eval()
        per_study = []
        for batch in loaders["validation"]:
            logits = model(pixel_values_videos=batch["pixel_values_videos"], input_ids=batch["input_ids"],
                           attention_mask=batch["attention_mask"]).logits
            targets = batch["labels"][:, 1:]
            token_losses = torch.nn.functional.cross_entropy(logits[:, :-1].float().transpose(1, 2), targets,
                                                             ignore_index=-100, reduction="none")
            sums = torch.stack([token_losses.sum(1), (targets != -100).sum(1).float()], dim=1)
            per_study.append(accelerator.gather_for_metrics(sums))
        model.train()
        total = torch.cat(per_study).sum(0)
        val_loss = float(total[0] / total[1].clamp(min=1))
        return {"val_loss": val_loss, "val_perplexity": math.exp(min(val_loss, 50.0))}

    def results(self, model, loaders: dict, accelerator: Accelerator, summary: dict) -> dict:
        return summary

    def save(self, model, study_processor, metrics: dict, state_dict: dict | None = None) -> None:
        save_trained(model, self.processor, self.config, metrics, state_dict)
