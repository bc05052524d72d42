"""`pipeline("cmr-report-generation", model=DIR)`: CMR-TARGET's draft impression for cardiac MRI studies.

    import cmr_clip
    from transformers import pipeline

    draft = pipeline("cmr-report-generation", model="cmr-clip-demo/report")
    draft("study_dir")                          # {"generated_impression": "...", "sentences": [...], "warnings": []}
    draft(["a", "b"], num_beams=4, max_sentences=3)
    draft({"pixel_values_videos": frames})      # (T, 3, H, W) or (1, T, 3, H, W), already processed

Generation keywords (`num_beams`, `do_sample`, `temperature`, `max_new_tokens`, `max_sentences`, ...) pass
through to `generate`; greedy decoding is the default and is deterministic. A study that cannot be read
gets `{"error": "<type>: <why>"}` and the others are answered; a path holding several studies is such an
error (`MultipleStudiesError`): pass `read_study(path, study=...)`, a `Study`, instead. The output is a
draft for a reader to edit, not a report.
"""

from __future__ import annotations

from transformers import Pipeline

from .studies import study_inputs


class CMRReportGenerationPipeline(Pipeline):
    _load_processor = True
    _load_tokenizer = False
    _load_feature_extractor = False
    _load_image_processor = False
    _load_video_processor = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.processor is None:
            from ..processing import CMRTargetProcessor

            self.processor = CMRTargetProcessor.from_pretrained(self.model.name_or_path)
        self.tokenizer = self.processor.tokenizer
        self.feature_extractor = self.processor.feature_extractor

    def _sanitize_parameters(self, max_new_tokens: int | None = None, **generate_kwargs):
        generate_kwargs["max_new_tokens"] = max_new_tokens or 160
        return {}, {"generate_kwargs": generate_kwargs}, {}

    def preprocess(self, study) -> dict:
        return study_inputs(study, self.feature_extractor, "cmr-report-generation")

    def _forward(self, model_inputs: dict, generate_kwargs: dict) -> dict:
        pixels = model_inputs["pixel_values_videos"].to(self.device, self.model.dtype)
        sequences = self.model.generate(pixels, **generate_kwargs)
        per_study = sequences.shape[0] // pixels.shape[0]
        return {"sequences": sequences.reshape(pixels.shape[0], per_study, -1),
                "warnings": model_inputs["warnings"], "error": model_inputs["error"]}

    def postprocess(self, model_outputs: dict) -> dict | list[dict]:
        if model_outputs["error"][0] is not None:
            return {"error": model_outputs["error"][0]}
        drafts = [
            {"generated_impression": " ".join(sentences), "sentences": sentences, "warnings": model_outputs["warnings"][0]}
            for sentences in self.processor.decode_sentences(model_outputs["sequences"][0])
        ]
        return drafts[0] if len(drafts) == 1 else drafts
