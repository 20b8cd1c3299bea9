"""The offline zero-shot robustness protocol: an application of :mod:`advsimplex.train` and
:mod:`advsimplex.evaluation` (their public APIs only).

A proxy CLIP (``advsimplex-proxy-vit``) is pre-trained contrastively on the seven offline sets, then
fine-tuned adversarially on Tiny-ImageNet with AdvSimplex and its baselines at equal budget, each
method's trade-off knob swept; every model is evaluated zero-shot on the seven test splits, and each
method's knob value is chosen on held-out parts of the training splits.

Modules, one job each:

- :mod:`.settings`   the plan: methods and knob values, the shared budget, the evaluation (full and quick)
- :mod:`.proxy`      the proxy's pre-training (cached) and its clean zero-shot accuracy
- :mod:`.training`   one run through ``advsimplex.train`` (keys checked against TrainConfig at run time)
- :mod:`.scoring`    one model's evaluation parts (test, val, autoattack), cached
- :mod:`.selection`  each method's knob value, chosen on the held-out parts
- :mod:`.pipeline`   jobs in worker processes, resumable; :func:`run_protocol`
- :mod:`.report`     results.json, report.md (Tables 2/3 layout), tradeoff.png, protocol.json
- :mod:`.cli`        ``advsimplex-protocol``
"""

from .pipeline import run_protocol
from .settings import MethodSpec, ProtocolPlan, build_plan
from .training import ProtocolError

__all__ = ["MethodSpec", "ProtocolError", "ProtocolPlan", "build_plan", "run_protocol"]
