"""transformers' import chain with the noise of optional backends silenced, imported first by `cmr_clip`.

When torchao is installed, transformers imports it on its way to `modeling_utils` (its torchao quantizer), and
on a machine without CUDA that logs a warning for each CUDA kernel library torchao cannot load, then torch logs
a deprecation warning for each Enum torchao registers with it: six lines on stderr before any `cmr-clip`
command says anything, about nothing the user can act on. `precision.quiet_loggers` raises those loggers to
ERROR for the import alone and puts their levels back after it; their later messages are shown as usual.
"""

from __future__ import annotations

from .precision import quiet_loggers

with quiet_loggers():
    # transformers' quantizers import torchao, where it is installed
    import transformers.modeling_utils  # noqa: F401
