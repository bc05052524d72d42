"""Fine-tuning moved: it is the classification task of the one training loop
(`cmr_clip.training.tasks.classification`); import `finetune`, `FinetuneConfig`, `load_finetuned`,
`apply_lora` and `PromptClassifier` from `cmr_clip.training`. This package keeps only the `finetune`
command and the classification metrics until they move to `cmr_clip.commands` and `cmr_clip.evaluation`."""
