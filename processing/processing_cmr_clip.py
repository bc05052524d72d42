"""`CMRCLIPProcessor`: the tokenizer for report text and `CMRStudyProcessor` for studies, as one processor."""

from __future__ import annotations

from transformers.feature_extraction_utils import BatchFeature
from transformers.processing_utils import ProcessorMixin


class CMRCLIPProcessor(ProcessorMixin):
    """`processor(text=..., studies=...)` -> `input_ids`, `attention_mask`, `pixel_values_videos`, `study_metadata`.

    Saves to one folder with `save_pretrained` (tokenizer files plus `processor_config.json`) and loads
    with `CMRCLIPProcessor.from_pretrained` or, after `import cmr_clip`, `AutoProcessor.from_pretrained`.
    """

    def __init__(self, tokenizer=None, feature_extractor=None, **kwargs):
        super().__init__(tokenizer=tokenizer, feature_extractor=feature_extractor, **kwargs)

    def __call__(
        self,
        text=None,
        studies=None,
        return_tensors: str | None = "pt",
        padding: bool | str = True,
        truncation: bool = True,
        max_length: int | None = None,
        skip_errors: bool = False,
        **study_kwargs,
    ) -> BatchFeature:
        """Tokenise `text` and/or process `studies` (see `CMRStudyProcessor.__call__` for `skip_errors`).

        With `skip_errors`, texts of studies that were skipped are dropped too, so pairs stay aligned.
        """
        if text is None and studies is None:
            raise ValueError("pass text=..., studies=... or both")
        if text is not None and study_kwargs.get("expand_studies"):
            raise ValueError("texts pair with inputs, so expand_studies cannot be used with text; pick each study "
                             "with study=... or read_studies(), and pass one text per study")
        data, skip = {}, ["study_metadata", "errors"]
        if studies is not None:
            videos = self.feature_extractor(studies, return_tensors=return_tensors, skip_errors=skip_errors, **study_kwargs)
            data.update(videos)
            if text is not None and isinstance(text, (list, tuple)) and videos["errors"]:
                kept = {meta["index"] for meta in videos["study_metadata"]}
                text = [t for i, t in enumerate(text) if i in kept]
        if text is not None:
            encoded = self.tokenizer(
                text, return_tensors=return_tensors, padding=padding, truncation=truncation, max_length=max_length
            )
            data.update(encoded)
        return BatchFeature(data=data, skip_tensor_conversion=skip)

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "pixel_values_videos"]
