"""``python -m specnb.zoo COMMAND``: see :mod:`specnb.zoo.cli`."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
