"""``python -m advsimplex.train`` (same as ``advsimplex-train``)."""

import sys

from .cli import main

sys.exit(main())
