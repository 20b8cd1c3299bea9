"""Prompt templates for the zero-shot classifiers: the paper's single prompt or OpenAI ensembles.

A template spec (``--templates``, repeatable) is one of

- ``paper``: ``"This is a photo of a {}"`` (math spec §1; TeCoA/FARE/AdvSimplex evaluation);
- ``openai``: OpenAI CLIP's per-dataset ensemble (``zeroshot_metadata.json``; ImageNet's 80
  templates from ``open_clip.zero_shot_metadata`` for ImageNet and for datasets without their own);
- ``openai-imagenet`` / ``simple-imagenet``: open_clip's 80-template / 7-template ImageNet ensembles
  for every dataset;
- a ``.txt`` file (one template per line, ``#`` comments) or a ``.json`` file (a list, or
  ``{dataset name: list}`` with an optional ``"default"`` list);
- one or more literal templates containing ``{}``.

Ensembles are averaged in embedding space (``class_text_features``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..zeroshot import DEFAULT_TEMPLATES
from .suite import zeroshot_metadata

NAMED_SETS = ("paper", "openai", "openai-imagenet", "simple-imagenet")


def _as_strings(templates) -> tuple[str, ...]:
    """open_clip ships templates as lambdas; render them with a ``{}`` placeholder."""
    return tuple(t if isinstance(t, str) else t("{}") for t in templates)


def openai_imagenet_templates() -> tuple[str, ...]:
    """The 80 OpenAI ImageNet templates (``open_clip.zero_shot_metadata.OPENAI_IMAGENET_TEMPLATES``)."""
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    return _as_strings(OPENAI_IMAGENET_TEMPLATES)


def simple_imagenet_templates() -> tuple[str, ...]:
    """open_clip's 7-template subset (``SIMPLE_IMAGENET_TEMPLATES``)."""
    from open_clip.zero_shot_metadata import SIMPLE_IMAGENET_TEMPLATES

    return _as_strings(SIMPLE_IMAGENET_TEMPLATES)


def _validate(templates: Sequence[str], where: str) -> tuple[str, ...]:
    out = tuple(templates)
    if not out:
        raise ValueError(f"{where}: no template given")
    for t in out:
        if not isinstance(t, str) or t.count("{}") != 1:
            raise ValueError(f"{where}: every template must contain one '{{}}' for the class name, got {t!r}")
    return out


@dataclass(frozen=True)
class TemplateSpec:
    """What ``--templates`` asked for; :meth:`for_dataset` gives the templates of one dataset."""

    kind: str  # a NAMED_SETS entry, "file" or "literal"
    label: str
    fixed: tuple[str, ...] = ()
    per_dataset: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def for_dataset(self, key: str | None) -> tuple[str, ...]:
        """The templates for the dataset whose suite name (template key) is ``key`` (None: generic)."""
        if self.kind == "paper":
            return tuple(DEFAULT_TEMPLATES)
        if self.kind == "openai":
            if key == "imagenet" or key is None:
                return openai_imagenet_templates()
            listed = zeroshot_metadata()["templates"].get(key)
            return tuple(listed) if listed else openai_imagenet_templates()
        if self.kind == "openai-imagenet":
            return openai_imagenet_templates()
        if self.kind == "simple-imagenet":
            return simple_imagenet_templates()
        if key is not None and key in self.per_dataset:
            return self.per_dataset[key]
        if self.fixed:
            return self.fixed
        raise ValueError(f"templates {self.label}: no entry for dataset {key!r} and no 'default' list")


def parse_templates(values: Sequence[str] | str | None) -> TemplateSpec:
    """Interpret ``--templates`` values (see the module docstring); errors name the option."""
    if values is None:
        values = ["paper"]
    if isinstance(values, str):
        values = [values]
    values = list(values)
    if not values:
        raise ValueError("--templates: no value given")
    if len(values) == 1 and values[0] in NAMED_SETS:
        return TemplateSpec(values[0], values[0])
    if len(values) == 1 and "{}" not in values[0]:
        path = Path(values[0])
        if not path.is_file():
            raise ValueError(
                f"--templates: {values[0]!r} is neither a named set ({', '.join(NAMED_SETS)}), an existing "
                ".txt/.json file, nor a template containing '{}'"
            )
        return _from_file(path)
    return TemplateSpec("literal", " | ".join(values), fixed=_validate(values, "--templates"))


def _from_file(path: Path) -> TemplateSpec:
    where = f"--templates file {path}"
    if path.suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, list):
            return TemplateSpec("file", str(path), fixed=_validate(data, where))
        if isinstance(data, dict):
            per = {str(k): _validate(v, f"{where} [{k}]") for k, v in data.items() if k != "default"}
            fixed = _validate(data["default"], f"{where} [default]") if "default" in data else ()
            return TemplateSpec("file", str(path), fixed=fixed, per_dataset=per)
        raise ValueError(f"{where}: expected a list of templates or a {{dataset: [templates]}} object")
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    templates = [ln for ln in lines if ln and not ln.startswith("#")]
    return TemplateSpec("file", str(path), fixed=_validate(templates, where))
