"""`python -m cmr_clip COMMAND ...`: the `cmr-clip` command line (see `cmr_clip.cli`)."""

import sys

from .cli import main

sys.exit(main())
