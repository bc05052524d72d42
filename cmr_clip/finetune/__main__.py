"""`accelerate launch -m cmr_clip.finetune --model DIR --data DIR --labels ... [--lora ...]`."""

import sys

from .cli import main

sys.exit(main())
