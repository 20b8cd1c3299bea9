"""Training of open_clip models: AdvSimplex adversarial fine-tuning, its baselines, contrastive pre-training.

Modules, one job each:

- :mod:`.config`       the flat :class:`TrainConfig`: each key's type, default, help and resume policy
- :mod:`.coercion`     YAML / flag values → the keys' types
- :mod:`.validation`   ranges and choices (:class:`ConfigError` names the key)
- :mod:`.presets`      YAML files, the shipped presets (``configs/train``), ``base:`` chains, :func:`load_config`
- :mod:`.flags`        one ``advsimplex-train`` flag per key
- :mod:`.objective`    the interface of an objective
- :mod:`.methods`      the objectives: advsimplex, sampled, tecoa, trades, pmg, fare, agft
- :mod:`.pretrain`     the contrastive ``clip`` objective (captions from class names)
- :mod:`.modeling`     loading, freezing, VPT, the class-prompt embeddings, exported weights
- :mod:`.data`         datasets, the resumable sharded sampler
- :mod:`.optim`        AdamW / SGD, warmup + cosine schedule
- :mod:`.checkpoint`   safetensors checkpoints (atomic, checksummed, no pickle) with optimizer, scheduler, RNG state
- :mod:`.rundir`       the out_dir policy (never written over by accident; ``overwrite``)
- :mod:`.resume`       which checkpoint to resume from and whether the settings allow an exact resume
- :mod:`.distributed`  torchrun / DistributedDataParallel helpers (nccl or gloo)
- :mod:`.metrics`      CSV and TensorBoard
- :mod:`.evaluate`     clean / PGD zero-shot accuracy
- :mod:`.trainer`      the loop: :func:`train` (non-finite guard: :class:`NonFiniteError`)
- :mod:`.demo`         the README's main job (``python -m advsimplex``)
- :mod:`.cli`          ``advsimplex-train``
"""

from .checkpoint import CheckpointError
from .config import METHODS, ConfigError, TrainConfig
from .methods import build_objective
from .presets import list_presets, load_config
from .trainer import NonFiniteError, TrainResult, train

__all__ = [
    "METHODS",
    "CheckpointError",
    "ConfigError",
    "NonFiniteError",
    "TrainConfig",
    "TrainResult",
    "build_objective",
    "list_presets",
    "load_config",
    "train",
]
