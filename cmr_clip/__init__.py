"""cmr-clip: cardiac MRI video-text foundation models (CMR-CLIP, CMR-TARGET) for the Hugging Face ecosystem.

Importing this package registers the models with transformers' Auto* classes and the pipelines with
transformers' pipeline registry.
"""

__version__ = "0.1.0.dev0"
