"""Publishing to the Hugging Face Hub: remote code, the model card, and `push`.

    from cmr_clip.hub import push, model_card, export_remote_code

    push("cmr-clip-demo", "my-org/cmr-clip-demo", private=True)   # what `cmr-clip push DIR --repo-id ...` does

- `publication.py`: what each model type publishes (pipeline tag, tasks, Auto classes, tags).
- `remote_code.py`: the package's modules copied flat into the folder, with `auto_map` and `custom_pipelines`,
  so that `trust_remote_code=True` loading works without cmr_clip.
- `model_card.py`: the generated card (Hub metadata, results from metrics.json, intended use, training data,
  limitations, how to load and cite; a converted release's provenance).
- `upload.py`: `stage` (what is uploaded, PHI guard included), `push`, `push_pretrained`, and the dataset routes
  `stage_dataset` / `push_dataset`.
- `space.py`: the study web page (`cmr-clip app`) as a Gradio Space: `stage_space` (app.py, requirements, card,
  the models and index beside them, PHI guard included) and `push_space`.

The PHI guard itself is the privacy layer's (`cmr_clip.privacy`), which every writer of the package calls;
`PHIError`, `check_no_phi`, `check_dataset` and `scan_folder` stay importable from here for one release.
"""

from ..privacy import PHIError, check_dataset, check_no_phi, scan_folder
from .model_card import CITATION, card_results, model_card, training_data_summary
from .publication import PUBLICATIONS, HubPublishError, Publication, publication
from .remote_code import export_remote_code, flat_source
from .space import push_space, stage_space
from .upload import DROPPED_DATASET_COLUMNS, PUBLISHED_FILES, push, push_dataset, push_pretrained, stage, stage_dataset

__all__ = [
    "CITATION", "DROPPED_DATASET_COLUMNS", "PUBLICATIONS", "PUBLISHED_FILES", "HubPublishError", "PHIError",
    "Publication", "card_results", "check_dataset", "check_no_phi", "export_remote_code", "flat_source", "model_card",
    "publication", "push", "push_dataset", "push_pretrained", "push_space", "scan_folder", "stage", "stage_dataset",
    "stage_space", "training_data_summary",
]
