"""Training of open_clip models: AdvSimplex adversarial fine-tuning, its baselines, contrastive pre-training.

Modules, one job each:

- :mod:`.config`       the flat :class:`TrainConfig`, YAML presets (``configs/train``), flags, validation
- :mod:`.methods`      the objectives: advsimplex, sampled, tecoa, trades, pmg, fare
- :mod:`.pretrain`     the contrastive ``clip`` objective (captions from class names)
- :mod:`.modeling`     loading, freezing, VPT, the class-prompt embeddings, exported weights
- :mod:`.data`         datasets, the resumable sharded sampler
- :mod:`.optim`        AdamW / SGD, warmup + cosine schedule
- :mod:`.checkpoint`   safetensors checkpoints (atomic, no pickle) with optimizer, scheduler and RNG state
- :mod:`.distributed`  torchrun / DistributedDataParallel helpers (nccl or gloo)
- :mod:`.metrics`      CSV and TensorBoard
- :mod:`.evaluate`     clean / PGD zero-shot accuracy
- :mod:`.trainer`      the loop: :func:`train`
- :mod:`.demo`         the README's main job (``python -m advsimplex``)
- :mod:`.cli`          ``advsimplex-train``
"""

from .config import METHODS, ConfigError, TrainConfig, list_presets, load_config
from .methods import advsimplex_encoder, build_objective
from .trainer import TrainResult, train

__all__ = [
    "METHODS",
    "ConfigError",
    "TrainConfig",
    "TrainResult",
    "advsimplex_encoder",
    "build_objective",
    "list_presets",
    "load_config",
    "train",
]
