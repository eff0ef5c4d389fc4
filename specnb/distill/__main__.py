"""``python -m specnb.distill COMMAND``: see :mod:`specnb.distill.cli`."""

from .cli import main

main()
