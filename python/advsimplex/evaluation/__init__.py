"""Zero-shot robustness evaluation of CLIP models (math spec §8).

Modules, one job each:

- :mod:`.suite`      the paper's 15-dataset suite and generic sources (where files are expected)
- :mod:`.prompts`    prompt templates: the paper's single prompt, OpenAI ensembles, files
- :mod:`.attacks`    the attacks behind one interface (PGD, CW, AutoAttack, simplex, simplex transfer)
- :mod:`.pgd`        PGD and CW-margin attacks on the library's attack loop
- :mod:`.autoattack` the ``pyautoattack`` adapter (APGD-CE + APGD-T)
- :mod:`.simplex`    the adversarial-simplex attack (paper Fig. 3a)
- :mod:`.runner`     models × datasets × attacks × ε → records (deterministic under a seed)
- :mod:`.report`     JSON records, markdown tables, accuracy-vs-ε plot
- :mod:`.cli`        the ``advsimplex-eval`` command (also ``python -m advsimplex.evaluation``)
"""

from .attacks import ATTACKS, AttackSettings, run_attack
from .autoattack import autoattack, autoattack_attacks
from .pgd import margin_loss, pgd_attack
from .prompts import TemplateSpec, parse_templates
from .report import load_results, markdown_report, plot_robustness, write_results
from .runner import DEFAULT_ATTACKS, DEFAULT_EPS, EvalConfig, ModelSpec, count_correct, evaluate, subset_indices
from .simplex import simplex_attack, worst_simplex_point
from .suite import PAPER_SUITE, SUITE, DatasetNotFoundError, resolve_datasets

__all__ = [
    "ATTACKS",
    "DEFAULT_ATTACKS",
    "DEFAULT_EPS",
    "PAPER_SUITE",
    "SUITE",
    "AttackSettings",
    "DatasetNotFoundError",
    "EvalConfig",
    "ModelSpec",
    "TemplateSpec",
    "autoattack",
    "autoattack_attacks",
    "count_correct",
    "evaluate",
    "load_results",
    "margin_loss",
    "markdown_report",
    "parse_templates",
    "pgd_attack",
    "plot_robustness",
    "resolve_datasets",
    "run_attack",
    "simplex_attack",
    "subset_indices",
    "worst_simplex_point",
    "write_results",
]
