"""`pipeline("zero-shot-cmr", model=DIR)`: zero-shot answers about cardiac MRI studies from CMR-CLIP.

    import cmr_clip
    from transformers import pipeline

    classify = pipeline("zero-shot-cmr", model="cmr-clip-demo")
    classify("study_dir")                                   # every finding of the prompt set, multi-label
    classify(["a", "b"], candidate_labels=["hcm", "amyloidosis", "normal"])   # softmax over labels
    classify("study_dir", findings=["lge"], estimate="lvef")
    pipeline("zero-shot-cmr", model="cmr-clip-demo", dtype="float32", quantize="int8")   # see below

A study is a path (folder or zip), a `Study` from `read_study`, `{"pixel_values_videos": (T, 3, H, W) or
(1, T, 3, H, W)}` already processed, or `{"video_embeds": (D,) or (1, D)}` cached embeddings; a list is a
batch of studies. A path holding several studies is answered with a `MultipleStudiesError` entry: pass
`read_study(path, study=...)` for the one you mean. The
answer per study is a dict: `labels` (sorted, scores sum to 1), `findings` (sorted by probability, with
`present` when the prompt set has a threshold for the finding), `estimates` (name -> value), the study's view
`coverage` and the processor's `warnings` for the study; a study that cannot be read gets `{"error": "<type>: <why>"}`
instead, and the other studies of the call are answered as usual. No paths or identifiers are echoed
back.

Probabilities are calibrated where the prompt set carries a calibration for the finding (`raw_score` then keeps
the uncalibrated one). A finding that needs views the study lacks (the prompt set's `requires_views`: LGE
findings need an LGE view, RV findings a cine SAX or 4CH) is `assessable: False` with the `reason`, and gets no
score unless the call passes `score_unassessable=True`.
`dtype` ("auto" by default: bfloat16 where the device has native bfloat16, else float32; or "float32",
"bfloat16", "float16" on a GPU) and `quantize` (None or "int8", torchao) set the model's inference
precision (`cmr_clip.precision`); the pipeline converts the model it is given, and `classify.precision`
says what it picked and why. Scores come back as float32 whatever the precision.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import Pipeline

from ..embeddings import encode_videos
from ..precision import set_precision
from ..processing import CMRCLIPProcessor
from .prompts import PromptSet, model_prompt_set
from .scoring import PromptBank, ZeroShotQuery
from .calibration import missing_requirement
from .studies import is_read_study, study_context, study_inputs


class ZeroShotCMRPipeline(Pipeline):
    _load_processor = True
    _load_tokenizer = False
    _load_feature_extractor = False
    _load_image_processor = False
    _load_video_processor = False

    def __init__(self, *args, prompt_set: str | Path | PromptSet | None = None, quantize: str | None = None,
                 compile: bool = False, **kwargs):
        self._prompt_source, self._prompt_set = prompt_set, None
        dtype = kwargs.get("dtype", "auto")  # pipeline() loaded the model with it; Pipeline.__init__ drops it
        super().__init__(*args, **kwargs)
        self.precision = set_precision(self.model, dtype, quantize, compile)
        if self.processor is None:
            self.processor = CMRCLIPProcessor.from_pretrained(self.model.name_or_path)
        # Batching collates with the tokenizer's pad id; studies of one processor share a shape.
        self.tokenizer = self.processor.tokenizer
        self.feature_extractor = self.processor.feature_extractor
        self.prompt_bank = PromptBank(self.model, self.tokenizer)

    @property
    def prompt_set(self) -> PromptSet:
        """The prompt set used when a call passes none: the one given at construction, else the model
        directory's `zero_shot_prompts.json`, else the built-in default."""
        if self._prompt_set is None:
            self._prompt_set = self._resolve_prompt_set(self._prompt_source)
        return self._prompt_set

    def _resolve_prompt_set(self, prompt_set) -> PromptSet:
        if isinstance(prompt_set, PromptSet):
            return prompt_set
        if prompt_set is not None:
            return PromptSet.load(prompt_set)
        return model_prompt_set(self.model.name_or_path)

    def __call__(self, studies, **kwargs):
        """
        Answer zero-shot questions about the cardiac MRI study or studies passed as inputs.

        Args:
            studies (`str`, `Path`, `Study`, `dict` or a `list` of these):
                The pipeline handles four kinds of study:

                - a path to a study folder or zip of DICOM files (it must hold one study);
                - a `Study` from `cmr_clip.read_study`;
                - `{"pixel_values_videos": tensor}`, frames already processed, (T, 3, H, W) or (1, T, 3, H, W);
                - `{"video_embeds": tensor}`, a cached CMR-CLIP study embedding, (D,) or (1, D).

            candidate_labels (`str` or `list[str]`, *optional*):
                Labels to choose among (softmax over them). A disease name of the prompt set uses its prompt
                ensemble; any other label is put into *hypothesis_template*.
            hypothesis_template (`str`, *optional*, defaults to `"{}."`):
                The sentence a candidate label is put into, with `{}` where the label goes; given, it is used
                for disease names too.
            findings (`bool`, `str` or `list[str]`, *optional*):
                Findings of the prompt set to judge, each on its own (multi-label); `True` asks all of them.
                With no labels, findings or estimates asked, every finding is judged.
            estimate (`str` or `list[str]`, *optional*):
                Quantities of the prompt set to estimate, e.g. `"lvef"`.
            prompt_set (`str`, `Path` or `PromptSet`, *optional*):
                The prompt set for this call (a JSON file, a model folder or a built-in name); by default the
                one given at construction, else the model's `zero_shot_prompts.json`, else the built-in set.
            score_unassessable (`bool`, *optional*, defaults to `False`):
                Score findings the study lacks the views for too (they stay `assessable: False`).
            batch_size (`int`, *optional*, defaults to 1):
                Studies run through the model at once.

        Return:
            A dictionary per study (a list of them for a list of studies) with the keys asked for:

            - **labels** (`list[dict]`) -- `{"label", "score"}` per candidate label, best first; the scores
              sum to 1.
            - **findings** (`list[dict]`) -- `{"finding", "score", "assessable"}` per finding, most probable
              first, the score the (calibrated) probability that the finding is present; with `threshold` and
              `present` (`bool`) where the prompt set has a threshold for it, `raw_score` where it has a
              calibration. A finding the study lacks the views for comes last as `{"finding", "assessable":
              False, "reason"}` (with its scores under `score_unassessable=True`).
            - **estimates** (`dict[str, float]`) -- quantity -> estimated value.
            - **coverage** (`dict`) -- views found, the layout's views missing, the share found and whether it
              is `low` (absent when the views are not known: processed frames or embeddings without metadata).
            - **warnings** (`list[str]`) -- what the processor noticed about the study (e.g. a missing view, low
              view coverage).

            A study that cannot be read gets `{"error": "<type>: <why>"}` instead; the others are answered.

        Example:

        ```python
        >>> import cmr_clip
        >>> from transformers import pipeline

        >>> classify = pipeline("zero-shot-cmr", model="cmr-clip-demo")
        >>> classify("cmr-clip-demo/cohort/studies/SYN00000", findings=["lge"], estimate="lvef")
        {'findings': [{'finding': 'lge', 'score': 0.71, 'threshold': 0.52, 'present': True}],
         'estimates': {'lvef': 41.3}, 'warnings': []}
        ```
        """
        return super().__call__(studies, **kwargs)

    def _sanitize_parameters(self, candidate_labels=None, hypothesis_template=None, findings=None, estimate=None,
                             prompt_set=None, score_unassessable=False, **kwargs):
        if kwargs:
            raise TypeError(f"zero-shot-cmr got unknown arguments {sorted(kwargs)}; it takes candidate_labels, "
                            "hypothesis_template, findings, estimate, prompt_set, score_unassessable, batch_size.")
        prompts = self._resolve_prompt_set(prompt_set) if prompt_set is not None else self.prompt_set
        query = ZeroShotQuery.build(prompts, candidate_labels, hypothesis_template, findings, estimate)
        return {}, {"query": query, "prompt_set": prompts}, {"query": query, "prompt_set": prompts,
                                                            "score_unassessable": bool(score_unassessable)}

    def preprocess(self, study) -> dict:
        if isinstance(study, dict) and "video_embeds" in study:
            embeds = torch.as_tensor(study["video_embeds"]).float().reshape(1, -1)
            return {"video_embeds": embeds, **study_context(study.get("study_metadata"), self.feature_extractor)}
        if (isinstance(study, dict) and "pixel_values_videos" in study) or isinstance(study, (str, Path)) or is_read_study(study):
            return study_inputs(study, self.feature_extractor, "zero-shot-cmr")
        raise TypeError(f"zero-shot-cmr takes a study path, a Study, a dict with 'pixel_values_videos' or 'video_embeds', "
                        f"or a list of these; got {type(study).__name__}.")

    def _forward(self, model_inputs: dict, query: ZeroShotQuery, prompt_set: PromptSet) -> dict:
        if "video_embeds" in model_inputs:
            videos = torch.nn.functional.normalize(model_inputs["video_embeds"].to(self.device), dim=-1)
        else:
            videos = encode_videos(self.model, model_inputs["pixel_values_videos"])
        scale = float(self.model.logit_scale_value().detach())
        scores = self.prompt_bank.score(videos, query, prompt_set, scale)
        return {**scores, **{key: model_inputs[key] for key in ("warnings", "coverage", "error")}}

    def postprocess(self, model_outputs: dict, query: ZeroShotQuery, prompt_set: PromptSet,
                    score_unassessable: bool = False) -> dict:
        if model_outputs["error"][0] is not None:
            return {"error": model_outputs["error"][0]}
        result = {}
        if query.labels:
            scores = model_outputs["label_scores"].reshape(-1).tolist()
            result["labels"] = sorted(({"label": l, "score": s} for l, s in zip(query.labels, scores)),
                                      key=lambda item: -item["score"])
        coverage = model_outputs["coverage"][0]
        if query.findings:
            scores = model_outputs["finding_scores"].reshape(-1).tolist()
            raw = model_outputs["raw_finding_scores"].reshape(-1).tolist()
            views = None if coverage is None else set(coverage["views_found"])
            items = [_finding(name, score, raw_score, prompt_set, views, score_unassessable)
                     for name, score, raw_score in zip(query.findings, scores, raw)]
            result["findings"] = sorted(items, key=lambda item: (not item["assessable"], -item.get("score", 0.0)))
        if query.estimates:
            values = model_outputs["estimates"].reshape(-1).tolist()
            result["estimates"] = dict(zip(query.estimates, values))
        if coverage is not None:
            result["coverage"] = coverage
        result["warnings"] = model_outputs["warnings"][0]
        return result


def _finding(name: str, score: float, raw_score: float, prompt_set: PromptSet, views: set[str] | None,
             score_unassessable: bool) -> dict:
    """One finding's answer: its probability and call, or why the study cannot be judged on it."""
    reason = missing_requirement(prompt_set.required_views(name), views)
    item = {"finding": name, "assessable": reason is None}
    if reason is not None:
        item["reason"] = reason
        if not score_unassessable:
            return item
    item["score"] = score
    if prompt_set.calibration_of(name) is not None:
        item["raw_score"] = raw_score
    if name in prompt_set.thresholds:
        item["threshold"] = prompt_set.thresholds[name]
        item["present"] = score >= prompt_set.thresholds[name]
    return item
