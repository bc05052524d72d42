"""`accelerate launch -m cmr_clip.training --config FILE [--key value ...]`: `cmr-clip train` under a launcher."""

import sys

from ..commands import train
from ..commands.base import execute

sys.exit(execute("train", train, sys.argv[1:]))
