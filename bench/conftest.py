import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
torch.set_num_threads(int(os.environ.get("ADVSIMPLEX_BENCH_THREADS", min(2, os.cpu_count() or 1))))
