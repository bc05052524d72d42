"""One thin module per `cmr-clip` command (parse, call the library, print), on the helpers of `base`.

Routing lives in `cmr_clip.cli`; every module here exposes `add_arguments(parser)` and `run(args) -> int`.
"""
