"""``python -m specnb.timeseries``: see specnb.timeseries.cli."""

import sys

from .cli import main

sys.exit(main())
