"""The error every evaluation raises when its data cannot support the figure asked for."""


class EvaluationError(ValueError):
    """The data cannot support the evaluation asked for (no labels, one class only, mismatched sizes)."""
