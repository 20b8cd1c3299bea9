"""``python -m advsimplex``: the README's main job, the AdvSimplex demo (:mod:`advsimplex.train.demo`).

``python -m advsimplex --info`` prints the installation report (:mod:`advsimplex.info`) only;
``python -m advsimplex --help`` lists the demo's options.
"""

from __future__ import annotations

import sys

from advsimplex.train.demo import main

if __name__ == "__main__":
    sys.exit(main())
