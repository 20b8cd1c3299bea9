import os
import sys
from pathlib import Path

import torch

# appended, not prepended: bench/profile.py must not shadow the standard library's profile module
sys.path.append(str(Path(__file__).parent))
torch.set_num_threads(int(os.environ.get("ADVSIMPLEX_BENCH_THREADS", min(2, os.cpu_count() or 1))))
