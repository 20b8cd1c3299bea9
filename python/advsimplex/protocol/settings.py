"""What the protocol runs: the methods and their trade-off knobs, the shared budget, the evaluation.

Every fine-tuning run starts from the proxy CLIP and differs from the others only in its method and
knob value: steps, batch, PGD path (m, ε, α), optimiser, learning rate, schedule and seed are shared
(:attr:`ProtocolPlan.finetune`). :func:`build_plan` gives the full protocol or its ``--quick`` smoke
variant; :meth:`ProtocolPlan.fingerprint` identifies the settings a result folder was made with.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace

from ..data import union_source

PROXY_MODEL = "advsimplex-proxy-vit"


@dataclass(frozen=True)
class MethodSpec:
    """A method of the sweep: the training ``method`` with ``fixed`` keys, and its knob.

    The knob (shown as ``knob``, ``tag`` in run ids) sets every TrainConfig key in ``keys`` to each of
    ``values`` in turn (PMG's two KL weights move together); a method without a trade-off knob (TeCoA)
    has ``keys == ()`` and one run.
    """

    name: str
    method: str
    title: str
    knob: str = ""
    tag: str = ""
    keys: tuple[str, ...] = ()
    values: tuple[float, ...] = ()
    fixed: dict = field(default_factory=dict)

    def points(self) -> list[float | None]:
        """The knob values swept (``[None]`` for a method without knob)."""
        return list(self.values) if self.keys else [None]

    def run_id(self, value: float | None) -> str:
        """The folder name of one run, e.g. ``advsimplex-lam10`` or ``tecoa``."""
        return self.name if value is None else f"{self.name}-{self.tag}{value:g}"

    def label(self, value: float | None) -> str:
        """The display name of one run, e.g. ``AdvSimplex (paper) λ=10``."""
        return self.title if value is None else f"{self.title} {self.knob}={value:g}"

    def overrides(self, value: float | None) -> dict:
        """The TrainConfig keys that distinguish this run from the shared budget."""
        return {"method": self.method, **self.fixed, **({k: value for k in self.keys} if value is not None else {})}


def method_specs(quick: bool, ablations: bool = False) -> list[MethodSpec]:
    """The eight methods of the protocol with their knob values (two per knob in ``quick``); with ``ablations``
    also AdvSimplex (paper) with uniform simplex weights instead of the impact weights, and with tetrahedra
    (Q = 4) instead of triangles, over the same λ values (the diagnosis of where AdvSimplex loses).

    λ of advsimplex/sampled multiplies an alignment term whose first-order part grows with the square of
    the logit scale (about 15-20 for the proxy against CLIP's 100), hence values above the paper's 0.6.
    """
    lam = (3.0, 10.0, 30.0)
    trades = (1.0, 3.0, 9.0)
    pmg = (0.3, 1.0, 3.0)
    fare = (0.0, 0.25, 0.5)
    agft = (0.2, 0.4, 0.8)
    if quick:
        lam, trades, pmg, fare, agft = lam[1:], trades[1:], pmg[1:], fare[1:], agft[1:]
    taylor2 = {"variant": "taylor2"}
    return [
        MethodSpec("advsimplex", "advsimplex", "AdvSimplex (paper)", "λ", "lam", ("lam",), lam, {"variant": "paper"}),
        MethodSpec("advsimplex-taylor2", "advsimplex", "AdvSimplex (taylor2)", "λ", "lam", ("lam",), lam, taylor2),
        MethodSpec("sampled", "sampled", "Sampled (κ=10)", "λ", "lam", ("lam",), lam, {"samples": 10}),
        MethodSpec("tecoa", "tecoa", "TeCoA"),
        MethodSpec("fare", "fare", "FARE", "λc", "lc", ("fare_clean_weight",), fare),
        MethodSpec("pmg", "pmg", "PMG-AFT", "w", "w", ("pmg_orig_weight", "pmg_clean_weight"), pmg),
        MethodSpec("trades", "trades", "TRADES", "β", "beta", ("trades_beta",), trades),
        MethodSpec("agft", "agft", "AGFT", "γ", "gamma", ("agft_gamma",), agft),
    ] + ([
        MethodSpec("advsimplex-uniform", "advsimplex", "AdvSimplex (paper, uniform ω)", "λ", "lam", ("lam",), lam,
                   {"variant": "paper", "weighting": "uniform"}),
        MethodSpec("advsimplex-q4", "advsimplex", "AdvSimplex (paper, Q=4)", "λ", "lam", ("lam",), lam,
                   {"variant": "paper", "order": 4}),
    ] if ablations else [])  # fmt: skip


@dataclass(frozen=True)
class EvalPlan:
    """The zero-shot evaluation of every model (test splits) and of the held-out parts (selection);
    ``proxy_clean_samples`` images per set (None: all) give the proxy's clean accuracy alone."""

    templates: str = "openai"
    test_samples: int = 500
    val_samples: int = 100
    eps: tuple[float, ...] = (1 / 255, 2 / 255)
    pgd_steps: int = 20
    autoattack_eps: float = 1 / 255
    autoattack_samples: int = 50
    autoattack_iters: int = 100
    autoattack_targets: int = 9
    batch_size: int = 250
    seed: int = 0
    proxy_clean_samples: int | None = None


@dataclass(frozen=True)
class ProtocolPlan:
    """Everything a protocol result depends on (recorded in ``protocol.json``)."""

    quick: bool
    methods: tuple[MethodSpec, ...]
    pretrain: dict
    finetune: dict
    evaluation: EvalPlan

    def fingerprint(self) -> str:
        """A hash of the shared settings (proxy, budget, evaluation): a result folder refuses to mix runs of
        different ones. Methods and knob values are not in it: each run records its own settings."""
        shared = {k: v for k, v in self.to_dict().items() if k != "methods"}
        return hashlib.sha256(json.dumps(shared, sort_keys=True, default=str).encode()).hexdigest()[:12]

    def pretrain_fingerprint(self) -> str:
        """A hash of the proxy's pre-training settings (its cache key)."""
        return hashlib.sha256(json.dumps(self.pretrain, sort_keys=True).encode()).hexdigest()[:12]

    def to_dict(self) -> dict:
        return {"quick": self.quick, "methods": [asdict(m) for m in self.methods], "pretrain": dict(self.pretrain),
                "finetune": dict(self.finetune), "evaluation": asdict(self.evaluation)}  # fmt: skip

    def with_methods(self, names: list[str]) -> ProtocolPlan:
        """The plan restricted to the methods ``names`` (in the plan's order); unknown names raise."""
        known = [m.name for m in self.methods]
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ValueError(f"--methods: unknown method(s) {', '.join(unknown)}; choose from {', '.join(known)}")
        return replace(self, methods=tuple(m for m in self.methods if m.name in names))


def pretrain_settings(quick: bool) -> dict:
    """TrainConfig keys of the proxy's contrastive pre-training (captions are added by :mod:`.proxy`)."""
    if quick:
        return {"model": PROXY_MODEL, "method": "clip", "dataset": union_source(), "steps": 6, "batch_size": 32,
                "optimizer": "adamw", "lr": 2e-3, "weight_decay": 0.1, "betas": [0.9, 0.98], "warmup_steps": 2,
                "schedule": "cosine", "seed": 0, "caption_set": "first"}  # fmt: skip
    return {"model": PROXY_MODEL, "method": "clip", "dataset": union_source(), "epochs": 10, "batch_size": 256,
            "optimizer": "adamw", "lr": 2e-3, "weight_decay": 0.1, "betas": [0.9, 0.98], "warmup_steps": 100,
            "schedule": "cosine", "seed": 0, "caption_set": "all"}  # fmt: skip


def finetune_settings(quick: bool) -> dict:
    """The budget every fine-tuning run shares (TrainConfig keys)."""
    budget = {"dataset": "tinyimagenet:fit", "steps": 100, "batch_size": 64, "attack_steps": 10, "eps": 2 / 255,
              "alpha": 1 / 255, "optimizer": "adamw", "lr": 1e-3, "weight_decay": 1e-4, "warmup_steps": 10,
              "schedule": "cosine", "seed": 0}  # fmt: skip
    if quick:
        budget.update(steps=2, batch_size=8, attack_steps=3, warmup_steps=0)
    return budget


def eval_settings(quick: bool) -> EvalPlan:
    if quick:
        return EvalPlan(templates="paper", test_samples=8, val_samples=8, pgd_steps=2, autoattack_samples=4,
                        autoattack_iters=2, autoattack_targets=2, batch_size=16, proxy_clean_samples=8)  # fmt: skip
    return EvalPlan()


def build_plan(quick: bool = False, ablations: bool = False) -> ProtocolPlan:
    """The full protocol, or the ``--quick`` smoke test (tiny budgets, two knob values, the same code paths); with
    ``ablations`` the two AdvSimplex ablations too (:func:`method_specs`)."""
    return ProtocolPlan(quick, tuple(method_specs(quick, ablations)), pretrain_settings(quick),
                        finetune_settings(quick), eval_settings(quick))  # fmt: skip
