"""``python -m mobile_sam_core``: see :mod:`mobile_sam_core.cli`."""

import sys

from .cli import main

sys.exit(main())
