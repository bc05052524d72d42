"""What each model type publishes on the Hub: its pipeline tag, the pipelines (tasks registered with transformers
when cmr_clip is imported), the Auto classes of its config, model and processor, and its tags (`PUBLICATIONS`);
`publication(save_dir)` reads a saved directory's model type and refuses one cmr-clip does not publish.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Publication:
    pipeline_tag: str
    tasks: tuple[str, ...]
    model_auto_map: dict[str, str]
    processor_auto_map: dict[str, str] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    summary: str = ""


# The Hub's pipeline_tag vocabulary is fixed and has no cardiac-MRI or video-text zero-shot task. A CMR-CLIP
# study is a video and the zero-shot pipeline answers class probabilities, so "video-classification" (what
# video-text CLIP models such as X-CLIP use); CMR-TARGET writes text from a study video:
# "video-text-to-text". Our own task names go into the tags.
PUBLICATIONS: dict[str, Publication] = {
    "cmr_clip": Publication(
        pipeline_tag="video-classification",
        tasks=("zero-shot-cmr",),
        model_auto_map={"AutoConfig": "CMRCLIPConfig", "AutoModel": "CMRCLIPModel"},
        processor_auto_map={"AutoProcessor": "CMRCLIPProcessor", "AutoFeatureExtractor": "CMRStudyProcessor"},
        tags=("cmr-clip", "zero-shot-cmr", "cardiac-mri", "medical-imaging", "video-text", "clip"),
        summary="a video-text contrastive model that embeds a whole cardiac MRI study (cine and LGE, short- and "
                "long-axis views, as one video) and report impression text in one space, for zero-shot "
                "findings, case retrieval and few-shot probes",
    ),
    "cmr_target": Publication(
        pipeline_tag="video-text-to-text",
        tasks=("cmr-report-generation",),
        model_auto_map={"AutoConfig": "CMRTargetConfig", "AutoModel": "CMRTargetForConditionalGeneration"},
        processor_auto_map={"AutoProcessor": "CMRTargetProcessor", "AutoFeatureExtractor": "CMRStudyProcessor"},
        tags=("cmr-target", "cmr-report-generation", "cardiac-mri", "medical-imaging", "report-generation"),
        summary="a report generator that drafts a cardiac MRI report impression from a whole study, on top of "
                "CMR-CLIP's video tower",
    ),
}


class HubPublishError(ValueError):
    """The directory cannot be published as asked (not a saved model, unknown model type)."""


def publication(save_dir: str | Path) -> Publication:
    config = read_json(Path(save_dir) / "config.json", required=True)
    model_type = config.get("model_type")
    if model_type not in PUBLICATIONS:
        raise HubPublishError(f"{save_dir}/config.json has model_type {model_type!r}; cmr-clip publishes "
                              f"{sorted(PUBLICATIONS)}.")
    return PUBLICATIONS[model_type]


def read_json(path: Path, required: bool = False) -> dict:
    if not path.is_file():
        if required:
            raise HubPublishError(f"{path} not found: pass a directory written by save_pretrained (or cmr-clip train).")
        return {}
    return json.loads(path.read_text())


