"""Evaluation of CMR-CLIP: retrieval, zero-shot and few-shot metrics."""

from .retrieval import retrieval_metrics

__all__ = ["retrieval_metrics"]
