"""`CMRTargetProcessor`: studies and impressions into CMR-TARGET's inputs, and generated ids back into
sentences.

An impression becomes `<video> x num_video_tokens, <bos>, sentence 1, <sep>, sentence 2, ..., <eos>`; the
labels are the same ids with -100 on the video placeholders, the start token and padding, so the
decoder learns every impression token, the sentence separators and the end of text.
"""

from __future__ import annotations

import re

import torch
from transformers.feature_extraction_utils import BatchFeature
from transformers.processing_utils import ProcessorMixin

VIDEO_TOKEN = "<|video|>"
SENTENCE_TOKEN = "<|sep|>"

# Within a line, a sentence ends at ". ", "! " or "? " followed by a letter (either case: dictated reports are
# often all lower case), a digit or a parenthesis, unless the word before the stop is a common abbreviation
# ("e.g. LGE", "approx. 45 %", "max. wall thickness"). Decimals ("1.5 T") have no space and are never split.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Za-z0-9(])")
_LIST_NUMBER = re.compile(r"^\d+[.)](\s+|$)")
ABBREVIATIONS = frozenset({"e.g", "i.e", "eg", "ie", "approx", "vs", "cf", "incl", "resp", "ca", "fig", "max", "dr",
                           "mr", "mrs", "ms", "prof", "st"})
"""Words (lower case, without their stop) after which ". " does not end a sentence."""


def split_sentences(text: str) -> list[str]:
    """The sentences of an impression: lines split into sentences, whitespace normalised, list numbers
    ("1.", "2)") at the start of a line or of a sentence dropped."""
    sentences = []
    for line in text.splitlines():
        sentences += [s for s in (_LIST_NUMBER.sub("", p) for p in _split_line(" ".join(line.split()))) if s]
    return sentences


def _split_line(line: str) -> list[str]:
    pieces, start = [], 0
    for boundary in _SENTENCE_END.finditer(line):
        words = line[start:boundary.start()].rsplit(" ", 1)
        if words[-1].rstrip(".!?").lower().lstrip("(") in ABBREVIATIONS:
            continue
        pieces.append(line[start:boundary.start()])
        start = boundary.end()
    return [*pieces, line[start:]]


class CMRTargetProcessor(ProcessorMixin):
    """The decoder's tokenizer and the study processor (`CMRStudyProcessor`), as one processor.

    `processor(studies=..., text=...)` gives `pixel_values_videos`, `input_ids`, `attention_mask` and, with
    text, `labels`; `processor(studies=...)` alone gives the generation prompt. `decode_sentences(ids)` turns
    `generate`'s output into one list of sentences per study. The tokenizer must hold the video and sentence
    tokens (`CMRTargetProcessor.add_special_tokens(tokenizer)` adds them).
    """

    def __init__(self, tokenizer=None, feature_extractor=None, num_video_tokens: int = 1, **kwargs):
        self.num_video_tokens = num_video_tokens
        super().__init__(tokenizer=tokenizer, feature_extractor=feature_extractor, **kwargs)
        missing = [t for t in (VIDEO_TOKEN, SENTENCE_TOKEN) if t not in self.tokenizer.get_vocab()]
        if missing:
            raise ValueError(
                f"the tokenizer lacks {missing}; add them with CMRTargetProcessor.add_special_tokens(tokenizer) "
                "and resize the decoder's embeddings."
            )

    @staticmethod
    def add_special_tokens(tokenizer) -> int:
        """Add the video placeholder and sentence separator (and a pad token if missing); returns how many
        tokens were added."""
        added = tokenizer.add_special_tokens({"additional_special_tokens": [VIDEO_TOKEN, SENTENCE_TOKEN]})
        if tokenizer.pad_token is None:
            added += tokenizer.add_special_tokens({"pad_token": "<|pad|>"})
        return added

    @property
    def video_token_id(self) -> int:
        return self.tokenizer.convert_tokens_to_ids(VIDEO_TOKEN)

    @property
    def sentence_token_id(self) -> int:
        return self.tokenizer.convert_tokens_to_ids(SENTENCE_TOKEN)

    def prompt_ids(self) -> list[int]:
        bos = self.tokenizer.bos_token_id
        return [self.video_token_id] * self.num_video_tokens + ([bos] if bos is not None else [])

    def impression_ids(self, text: str) -> list[int]:
        """The impression's tokens: sentences joined by the separator, then the end token. Each sentence is
        tokenised after a space, as words inside a text are, so that its first word is one familiar token
        ("ĠNormal") for byte-level vocabularies rather than pieces of a rarely seen text-initial form."""
        ids: list[int] = []
        for i, sentence in enumerate(split_sentences(text)):
            if i:
                ids.append(self.sentence_token_id)
            ids.extend(self.tokenizer(" " + sentence, add_special_tokens=False)["input_ids"])
        if self.tokenizer.eos_token_id is not None:
            ids.append(self.tokenizer.eos_token_id)
        return ids

    def encode_text(self, texts: list[str], max_length: int | None = None) -> dict[str, torch.Tensor]:
        """Right-padded `input_ids`, `attention_mask` and `labels` for impressions (teacher forcing);
        `max_length` cuts the impression tokens, never the prompt."""
        prompt = self.prompt_ids()
        rows = []
        for text in texts:
            target = self.impression_ids(text)
            if max_length is not None:
                target = target[: max(0, max_length - len(prompt))]
            rows.append((prompt + target, [-100] * len(prompt) + target))
        width = max(len(ids) for ids, _ in rows)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (ids, target) in enumerate(rows):
            input_ids[i, : len(ids)] = torch.tensor(ids)
            labels[i, : len(ids)] = torch.tensor(target)
            attention_mask[i, : len(ids)] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}

    def __call__(self, studies=None, text=None, max_length: int | None = None, skip_errors: bool = False,
                 **study_kwargs) -> BatchFeature:
        """Studies (paths, as `CMRStudyProcessor` takes them) and/or impressions into model inputs."""
        if studies is None and text is None:
            raise ValueError("pass studies=..., text=... or both")
        if text is not None and study_kwargs.get("expand_studies"):
            raise ValueError("texts pair with inputs, so expand_studies cannot be used with text; pick each study "
                             "with study=... or read_studies(), and pass one text per study")
        data: dict = {}
        if studies is not None:
            videos = self.feature_extractor(studies, return_tensors="pt", skip_errors=skip_errors, **study_kwargs)
            data.update(videos)
            if text is not None and isinstance(text, (list, tuple)) and videos["errors"]:
                kept = {meta["index"] for meta in videos["study_metadata"]}
                text = [t for i, t in enumerate(text) if i in kept]
        if text is not None:
            data.update(self.encode_text([text] if isinstance(text, str) else list(text), max_length))
        elif studies is not None:
            batch = data["pixel_values_videos"].shape[0]
            ids = torch.tensor([self.prompt_ids()] * batch, dtype=torch.long)
            data.update({"input_ids": ids, "attention_mask": torch.ones_like(ids)})
        return BatchFeature(data=data, skip_tensor_conversion=["study_metadata", "errors"])

    def decode_sentences(self, generated_ids: torch.Tensor | list, prompt_length: int | None = None) -> list[list[str]]:
        """Generated ids -> the sentences of each draft. The prompt (`prompt_length` tokens, default the
        processor's prompt) is dropped; the text stops at the first end or pad token."""
        prompt_length = len(self.prompt_ids()) if prompt_length is None else prompt_length
        stops = {self.tokenizer.eos_token_id, self.tokenizer.pad_token_id} - {None}
        drafts = []
        for row in (generated_ids.tolist() if isinstance(generated_ids, torch.Tensor) else generated_ids):
            pieces, current = [], []
            for token in row[prompt_length:]:
                if token in stops:
                    break
                if token == self.sentence_token_id:
                    pieces.append(current)
                    current = []
                else:
                    current.append(token)
            pieces.append(current)
            sentences = [self.tokenizer.decode(p, skip_special_tokens=True).strip() for p in pieces]
            drafts.append([s for s in sentences if s])
        return drafts

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "pixel_values_videos"]


__all__ = ["CMRTargetProcessor", "split_sentences", "VIDEO_TOKEN", "SENTENCE_TOKEN"]
