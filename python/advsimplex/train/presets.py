"""YAML configurations: the presets shipped in ``advsimplex/configs/train``, files with ``base:`` chains,
and :func:`load_config` (defaults < YAML < overrides, validated).

A YAML file holds a mapping of config keys to values; ``base: <preset or path>`` starts it from another
file (a relative path is looked up beside the file first), whose keys it then overrides. Files are read
with ``yaml.safe_load``: tags that would build Python objects are refused.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from .config import ConfigError, TrainConfig


def presets_folder():
    return resources.files("advsimplex") / "configs" / "train"


def list_presets() -> list[str]:
    """Names of the YAML presets shipped in ``advsimplex/configs/train``."""
    return sorted(p.name[: -len(".yaml")] for p in presets_folder().iterdir() if p.name.endswith(".yaml"))


def resolve_config_path(name: str) -> Path:
    """A YAML path, or the name of a shipped preset (``demo-advsimplex``)."""
    path = Path(name)
    if path.is_file():
        return path
    if path.suffix not in (".yaml", ".yml") and "/" not in name:
        candidate = presets_folder() / f"{name}.yaml"
        if candidate.is_file():
            return Path(str(candidate))
    raise ConfigError(f"config: {name!r} is neither a YAML file nor a preset (presets: {', '.join(list_presets())})")


def read_yaml(name: str, _seen: tuple[str, ...] = ()) -> dict:
    """The key/values of a YAML config (a preset name or path), with ``base:`` chains merged."""
    import yaml

    path = resolve_config_path(name)
    key = str(path.resolve())
    if key in _seen:
        raise ConfigError(f"config: 'base' chain loops back to {path}")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config: {path} is not valid YAML: {exc}") from exc
    if not isinstance(values, dict):
        raise ConfigError(f"config: {path} must hold a mapping of keys to values")
    base = values.pop("base", None)
    if base is None:
        return values
    if not isinstance(base, str):
        raise ConfigError(f"base: expected a preset name or path in {path}, got {base!r}")
    if not Path(base).is_absolute() and (path.parent / base).is_file():
        base = str(path.parent / base)
    return {**read_yaml(base, (*_seen, key)), **values}


def load_config(name: str | None = None, overrides: dict | None = None) -> TrainConfig:
    """Defaults < YAML ``name`` (preset or path, optional) < ``overrides``; validated."""
    cfg = TrainConfig()
    if name is not None:
        cfg.update(read_yaml(name), source=str(name))
    if overrides:
        cfg.update(overrides, source="overrides")
    return cfg.validate()


def dump_yaml(cfg: TrainConfig) -> str:
    """``cfg`` as YAML (the ``config.yaml`` of a run; loads back with :func:`load_config`)."""
    import yaml

    return yaml.safe_dump(cfg.to_dict(), sort_keys=False, allow_unicode=True)


def parse_yaml_config(text: str, source: str) -> dict:
    """The mapping in YAML ``text`` (a run's ``config.yaml``); :class:`ConfigError` naming ``source`` otherwise."""
    import yaml

    try:
        values = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config: {source} is not valid YAML: {exc}") from exc
    if not isinstance(values, dict):
        raise ConfigError(f"config: {source} must hold a mapping of keys to values")
    return values
