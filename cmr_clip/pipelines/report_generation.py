"""`pipeline("cmr-report-generation", model=DIR)`: CMR-TARGET's draft impression for cardiac MRI studies.

    import cmr_clip
    from transformers import pipeline

    draft = pipeline("cmr-report-generation", model="cmr-clip-demo/report")
    draft("study_dir")                          # {"generated_impression": "...", "sentences": [...], "warnings": []}
    draft(["a", "b"], num_beams=4, max_sentences=3)
    draft({"pixel_values_videos": frames})      # (T, 3, H, W) or (1, T, 3, H, W), already processed
    pipeline("cmr-report-generation", model="cmr-clip-demo/report", dtype="bfloat16", quantize="int8")

Generation keywords (`num_beams`, `do_sample`, `temperature`, `max_new_tokens`, `max_sentences`, ...) pass
through to `generate`; greedy decoding is the default and is deterministic. A study that cannot be read
gets `{"error": "<type>: <why>"}` and the others are answered; a path holding several studies is such an
error (`MultipleStudiesError`): pass `read_study(path, study=...)`, a `Study`, instead. The output is a
draft for a reader to edit, not a report.

`dtype` ("auto" by default: bfloat16 where the device has native bfloat16, else float32) and `quantize`
(None or "int8") set the model's inference precision as in `pipeline("zero-shot-cmr")`; `draft.precision`
says what was picked and why.
"""

from __future__ import annotations

from transformers import Pipeline

from ..precision import set_precision
from ..processing import CMRTargetProcessor
from .studies import study_inputs


class CMRReportGenerationPipeline(Pipeline):
    _load_processor = True
    _load_tokenizer = False
    _load_feature_extractor = False
    _load_image_processor = False
    _load_video_processor = False

    def __init__(self, *args, quantize: str | None = None, compile: bool = False, **kwargs):
        dtype = kwargs.get("dtype", "auto")  # pipeline() loaded the model with it; Pipeline.__init__ drops it
        super().__init__(*args, **kwargs)
        self.precision = set_precision(self.model, dtype, quantize, compile)
        if self.processor is None:
            self.processor = CMRTargetProcessor.from_pretrained(self.model.name_or_path)
        self.tokenizer = self.processor.tokenizer
        self.feature_extractor = self.processor.feature_extractor

    def __call__(self, studies, **kwargs):
        """
        Draft an impression for the cardiac MRI study or studies passed as inputs.

        Args:
            studies (`str`, `Path`, `Study`, `dict` or a `list` of these):
                The pipeline handles three kinds of study:

                - a path to a study folder or zip of DICOM files (it must hold one study);
                - a `Study` from `cmr_clip.read_study`;
                - `{"pixel_values_videos": tensor}`, frames already processed, (T, 3, H, W) or (1, T, 3, H, W).

            max_new_tokens (`int`, *optional*, defaults to 160):
                The most tokens a draft may have.
            max_sentences (`int`, *optional*):
                Stop each draft after this many sentences.
            num_beams, do_sample, temperature, num_return_sequences, ... (*optional*):
                Passed to `generate`; greedy decoding, the default, is deterministic.
            batch_size (`int`, *optional*, defaults to 1):
                Studies run through the model at once.

        Return:
            A dictionary per study (a list of them for a list of studies; a list per study with
            `num_return_sequences` above 1):

            - **generated_impression** (`str`) -- the draft, its sentences joined.
            - **sentences** (`list[str]`) -- the draft's sentences.
            - **warnings** (`list[str]`) -- what the processor noticed about the study (e.g. a missing view).

            A study that cannot be read gets `{"error": "<type>: <why>"}` instead; the others are answered.
            A draft is a starting point for a reader to edit, not a report.

        Example:

        ```python
        >>> import cmr_clip
        >>> from transformers import pipeline

        >>> draft = pipeline("cmr-report-generation", model="cmr-clip-demo/report")
        >>> draft("cmr-clip-demo/cohort/studies/SYN00000", num_beams=4, max_sentences=3)
        {'generated_impression': 'Normal LV size and function. No LGE.',
         'sentences': ['Normal LV size and function.', 'No LGE.'], 'warnings': []}
        ```
        """
        return super().__call__(studies, **kwargs)

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
