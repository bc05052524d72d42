"""`accelerate launch -m cmr_clip.finetune --model DIR --data-dir DIR --labels ... [--lora ...]`: `cmr-clip
finetune` under a launcher."""

import sys

from ..commands import finetune
from ..commands.base import execute

sys.exit(execute("finetune", finetune, sys.argv[1:]))
