"""open_clip models: the configs shipped with advsimplex, creation/loading, and checkpoint export.

The JSON files in ``configs/models/`` are open_clip model configs (same schema as open_clip's
own ``model_configs``); :func:`register_model_configs` adds them to open_clip's registry so
that ``open_clip.create_model("advsimplex-micro-vit")`` works like any built-in name.

- ``advsimplex-micro-vit`` (+ ``-quickgelu``): 8×8 pixels, 2 blocks of width 16, 8-d embeddings —
  for derivative tests on real open_clip code at float64 finite-difference cost.

Model sources accepted by :func:`load_clip`:

- an open_clip model name with an optional ``pretrained`` tag or local weights file
  (``load_clip("ViT-B-32", "openai")``, ``load_clip("ViT-B-32", "/ckpt/vitb32.pt")``);
- ``local-dir:/folder`` (an open_clip/HF-style folder with ``open_clip_config.json``);
- a ``.safetensors`` file written by :func:`save_clip` (the architecture, and the VPT prompt count of a
  prompt-tuned model, are read from its metadata).
"""

from __future__ import annotations

import json
import logging
import os
from importlib import resources
from pathlib import Path

import torch
from torch import nn

from ._io import atomic_write, tensors_checksum
from .runtime import nonfinite_entries

CHECKPOINT_FORMAT = "advsimplex.clip/1"
_REGISTERED = False


def register_model_configs() -> list[str]:
    """Add advsimplex's model configs to open_clip's registry (idempotent); returns their names."""
    global _REGISTERED
    import open_clip

    folder = resources.files("advsimplex") / "configs" / "models"
    names = sorted(p.name[: -len(".json")] for p in folder.iterdir() if p.name.endswith(".json"))
    if not _REGISTERED:
        with resources.as_file(folder) as path:
            open_clip.add_model_config(path)
        _REGISTERED = True
    return names


def read_checkpoint_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The string metadata of a safetensors file (no tensor is loaded, nothing is unpickled).

    Raises ``ValueError`` naming the file when it is not a readable safetensors file.
    """
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"{path} is truncated, corrupted or not a safetensors file ({exc})") from exc


def _text_argument(name: str, value, optional: bool = False) -> str | None:
    """``value`` as a string (paths accepted); ``TypeError`` naming the argument otherwise."""
    if value is None and optional:
        return None
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value:
        expected = "an open_clip model name, local-dir:<folder> or a .safetensors file" if name == "model" else (
            "None, a pretrained tag or a weights file")  # fmt: skip
        raise TypeError(f"{name} must be {expected}, got {type(value).__name__} {value!r}")
    return value


def load_clip(
    model: str | os.PathLike, pretrained: str | os.PathLike | None = None, *, device: str | torch.device = "cpu"
) -> tuple[nn.Module, object, str]:
    """Create or load an open_clip CLIP model: returns ``(model, tokenizer, model_name)``.

    ``model`` is an open_clip model name (``pretrained``: tag or local weights file, None for
    random weights), ``local-dir:<folder>``, or a ``.safetensors`` checkpoint from
    :func:`save_clip`. Loading never unpickles arbitrary objects (safetensors, or open_clip's
    ``torch.load(weights_only=True)``). The model is returned in eval mode.

    Refused with ``ValueError`` naming the file: unreadable or corrupted files (checksum mismatch),
    weights that do not fit the architecture (shapes, missing or unexpected keys), integer/bool tensors
    for floating weights, a pretrained ``save_clip`` file of another architecture (e.g. GELU weights for a
    QuickGELU model), and non-finite weights. ``TypeError`` for arguments of the wrong type.
    """
    import open_clip

    model = _text_argument("model", model)
    pretrained = _text_argument("pretrained", pretrained, optional=True)
    try:
        device = torch.device(device)
    except (TypeError, RuntimeError) as exc:
        raise TypeError(f"device must be a torch.device or a device string, got {device!r}") from exc
    register_model_configs()
    if model.endswith(".safetensors") and not model.startswith("local-dir:"):
        net, name = _load_saved(open_clip, Path(model))
    elif model.startswith("local-dir:"):
        folder = Path(model[len("local-dir:") :])
        if not (folder / "open_clip_config.json").is_file():
            raise FileNotFoundError(f"{model!r}: no open_clip_config.json in {folder}")
        name = model
        net = _create(open_clip, model, None)
    else:
        if model not in open_clip.list_models():
            close = [n for n in open_clip.list_models() if model.lower().replace("/", "-") in n.lower()][:8]
            raise ValueError(
                f"unknown open_clip model {model!r}" + (f"; did you mean one of {close}?" if close else "")
            )
        name = model
        if pretrained is not None and (("/" in pretrained) or pretrained.endswith((".pt", ".bin", ".safetensors"))):
            if not Path(pretrained).is_file():
                raise FileNotFoundError(f"pretrained weights file {pretrained!r} does not exist")
            net = _create(open_clip, model, None)
            _load_weights_file(open_clip, net, name, Path(pretrained))
        else:
            net = _create(open_clip, model, pretrained)
    if bad := nonfinite_entries(net.state_dict().items()):
        raise ValueError(f"model {model!r} holds non-finite weights: {', '.join(bad)}; refusing to use it")
    tokenizer = open_clip.get_tokenizer(name)
    return net.to(device).eval(), tokenizer, name


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, RuntimeError) as exc:
        raise ValueError(f"{path} is truncated or corrupted ({exc})") from exc


def _verify_checksum(path: Path, meta: dict[str, str], tensors: dict[str, torch.Tensor]) -> None:
    if "checksum" in meta and tensors_checksum(tensors) != meta["checksum"]:
        raise ValueError(f"{path} is corrupted: its tensors do not match the checksum stored with them")


def _check_dtypes(net: nn.Module, tensors: dict[str, torch.Tensor], source: str) -> None:
    """Every floating weight of ``net`` gets a floating tensor (no silent int → float copies)."""
    expected = net.state_dict()
    for key, t in tensors.items():
        target = expected.get(key)
        if target is not None and target.is_floating_point() and not t.is_floating_point():
            raise ValueError(f"{source}: {key} is stored as {t.dtype}, but the model's weight is {target.dtype}")


def _mismatch(source: str, name: str, exc: Exception) -> ValueError:
    text = (str(exc).strip() or type(exc).__name__).replace("\n\t", " ").replace("\n", " ")
    return ValueError(f"{source} does not fit the architecture {name}: {text[:600]}{' …' if len(text) > 600 else ''}")


def _load_saved(open_clip, path: Path) -> tuple[nn.Module, str]:
    """A :func:`save_clip` file: architecture (and VPT prompts) from the metadata, verified weights."""
    if not path.is_file():
        raise FileNotFoundError(f"model checkpoint {str(path)!r} does not exist")
    meta = read_checkpoint_metadata(path)
    if meta.get("format") != CHECKPOINT_FORMAT or "model_name" not in meta:
        raise ValueError(
            f"{str(path)!r} is not an advsimplex CLIP checkpoint (metadata format {meta.get('format')!r}); "
            "pass an open_clip model name with pretrained=<file> for other weight files"
        )
    name = meta["model_name"]
    tensors = _read_tensors(path)
    _verify_checksum(path, meta, tensors)
    net = _create(open_clip, name, None)
    if "vpt_prompts" in meta:
        from .vpt import add_visual_prompts

        add_visual_prompts(net, int(meta["vpt_prompts"]))
    _check_dtypes(net, tensors, str(path))
    try:
        missing, unexpected = net.load_state_dict(tensors, strict=False)
    except RuntimeError as exc:
        raise _mismatch(f"checkpoint {str(path)!r}", name, exc) from exc
    missing = [k for k in missing if not _aliased(net, k, tensors)]
    if missing or unexpected:
        raise ValueError(
            f"checkpoint {str(path)!r} does not match {name}: missing {missing}, unexpected {list(unexpected)}"
        )
    return net, name


def _aliased(net: nn.Module, key: str, tensors: dict) -> bool:
    """Whether weight ``key`` shares its storage with a weight that ``tensors`` holds (tied weights, which
    safetensors stores once)."""
    state = net.state_dict()
    ptr = state[key].untyped_storage().data_ptr()
    return any(k in tensors for k, v in state.items() if k != key and v.untyped_storage().data_ptr() == ptr)


def _load_weights_file(open_clip, net: nn.Module, name: str, path: Path) -> None:
    """Load a local weights file into ``net`` (architecture ``name``) with open_clip's loader, after checking
    what can be checked: a :func:`save_clip` file's architecture and checksum, and the tensors' dtypes."""
    source = f"pretrained file {str(path)!r}"
    if path.suffix == ".safetensors":
        meta = read_checkpoint_metadata(path)
        if meta.get("format") == CHECKPOINT_FORMAT and meta.get("model_name") not in (None, name):
            raise ValueError(
                f"{source} was saved from the architecture {meta['model_name']}, not {name}; load it as the model "
                f"itself (load_clip({str(path)!r}), --model {path})"
            )
        _verify_checksum(path, meta, _read_tensors(path))
    try:
        state = open_clip.factory.load_state_dict(str(path))
    except Exception as exc:  # torch.load / safetensors raise many types for a corrupt file
        raise ValueError(f"{source} could not be read ({type(exc).__name__}: {exc})") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{source} does not hold a state dict of tensors")
    _check_dtypes(net, state, source)
    try:
        open_clip.load_checkpoint(net, str(path), strict=True)
    except Exception as exc:  # state_dict errors, and open_clip's own asserts ("pos_embed width changed")
        raise _mismatch(source, name, exc) from exc


def _create(open_clip, name: str, pretrained: str | None) -> nn.Module:
    quiet = logging.getLogger().level
    logging.getLogger().setLevel(max(quiet, logging.ERROR) if pretrained is None else quiet)
    try:
        return open_clip.create_model(name, pretrained=pretrained)
    except RuntimeError as exc:
        raise RuntimeError(
            f"could not create open_clip model {name!r} (pretrained={pretrained!r}): {exc}. Downloads are "
            "impossible offline: pass a local weights file as pretrained, or a local-dir: folder"
        ) from exc
    finally:
        logging.getLogger().setLevel(quiet)


def save_clip(path: str | os.PathLike, model: nn.Module, model_name: str, **metadata: str) -> None:
    """Write ``model``'s weights to a safetensors file atomically, with the architecture and a checksum of the
    tensors in the metadata.

    The file loads back with ``load_clip(path)``; a VPT model (:mod:`advsimplex.vpt`) records its prompt
    count (``vpt_prompts``) so that its prompts are rebuilt. Extra ``metadata`` values must be strings.
    Raises ``ValueError`` (nothing is written) when a weight is not finite.
    """
    from safetensors.torch import load_file, save_file, save_model

    from .vpt import PromptedVisionTransformer

    state = model.state_dict()
    if bad := nonfinite_entries(state.items()):
        raise ValueError(f"refusing to save a model with non-finite weights to {path}: {', '.join(bad)}")
    meta = {"format": CHECKPOINT_FORMAT, "model_name": model_name, **{k: str(v) for k, v in metadata.items()}}
    if isinstance(getattr(model, "visual", None), PromptedVisionTransformer):
        meta["vpt_prompts"] = str(model.visual.num_prompts)
    storages = [v.untyped_storage().data_ptr() for v in state.values()]

    def write(tmp: str) -> None:
        if len(set(storages)) == len(storages):
            tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
        else:  # tied weights: safetensors stores each storage once; checksum what it stored
            save_model(model, tmp, metadata=meta)
            tensors = load_file(tmp)
        save_file(tensors, tmp, metadata={**meta, "checksum": tensors_checksum(tensors)})

    atomic_write(path, write)


def model_config(model_name: str) -> dict:
    """The open_clip config dict of a registered model name (a copy)."""
    import open_clip

    register_model_configs()
    cfg = open_clip.get_model_config(model_name)
    if cfg is None:
        raise ValueError(f"unknown open_clip model {model_name!r}")
    return json.loads(json.dumps(cfg))
