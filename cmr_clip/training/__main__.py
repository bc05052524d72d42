"""`accelerate launch -m cmr_clip.training --config FILE [--key value ...]`."""

import sys

from .cli import main

sys.exit(main())
