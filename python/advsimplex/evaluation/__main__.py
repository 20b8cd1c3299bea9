"""``python -m advsimplex.evaluation``: the ``advsimplex-eval`` command."""

import sys

from .cli import main

sys.exit(main())
