"""``python -m specnb``: see specnb.cli."""

import sys

from .cli import main

sys.exit(main())
