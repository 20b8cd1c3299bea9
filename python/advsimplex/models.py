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

from ._io import atomic_write

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
    """The string metadata of a safetensors file (no tensor is loaded, nothing is unpickled)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def load_clip(
    model: str, pretrained: str | None = None, *, device: str | torch.device = "cpu"
) -> tuple[nn.Module, object, str]:
    """Create or load an open_clip CLIP model: returns ``(model, tokenizer, model_name)``.

    ``model`` is an open_clip model name (``pretrained``: tag or local weights file, None for
    random weights), ``local-dir:<folder>``, or a ``.safetensors`` checkpoint from
    :func:`save_clip`. Loading never unpickles arbitrary objects (safetensors, or open_clip's
    ``torch.load(weights_only=True)``). The model is returned in eval mode.
    """
    import open_clip

    register_model_configs()
    if model.endswith(".safetensors") and not model.startswith("local-dir:"):
        path = Path(model)
        if not path.is_file():
            raise FileNotFoundError(f"model checkpoint {model!r} does not exist")
        meta = read_checkpoint_metadata(path)
        if meta.get("format") != CHECKPOINT_FORMAT or "model_name" not in meta:
            raise ValueError(
                f"{model!r} is not an advsimplex CLIP checkpoint (metadata format {meta.get('format')!r}); "
                "pass an open_clip model name with pretrained=<file> for other weight files"
            )
        name = meta["model_name"]
        net = _create(open_clip, name, None)
        if "vpt_prompts" in meta:
            from .vpt import add_visual_prompts

            add_visual_prompts(net, int(meta["vpt_prompts"]))
        from safetensors.torch import load_model

        missing, unexpected = load_model(net, str(path), strict=False)
        if missing or unexpected:
            raise ValueError(f"checkpoint {model!r} does not match {name}: missing {missing}, unexpected {unexpected}")
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
        if pretrained is not None and (("/" in pretrained) or pretrained.endswith((".pt", ".bin", ".safetensors"))):
            if not Path(pretrained).is_file():
                raise FileNotFoundError(f"pretrained weights file {pretrained!r} does not exist")
        name = model
        net = _create(open_clip, model, pretrained)
    tokenizer = open_clip.get_tokenizer(name)
    return net.to(device).eval(), tokenizer, name


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
    """Write ``model``'s weights to a safetensors file atomically, with the architecture in the metadata.

    The file loads back with ``load_clip(path)``; a VPT model (:mod:`advsimplex.vpt`) records its prompt
    count (``vpt_prompts``) so that its prompts are rebuilt. Extra ``metadata`` values must be strings.
    """
    from safetensors.torch import save_model

    from .vpt import PromptedVisionTransformer

    meta = {"format": CHECKPOINT_FORMAT, "model_name": model_name, **{k: str(v) for k, v in metadata.items()}}
    if isinstance(getattr(model, "visual", None), PromptedVisionTransformer):
        meta["vpt_prompts"] = str(model.visual.num_prompts)
    atomic_write(path, lambda tmp: save_model(model, tmp, metadata=meta))


def model_config(model_name: str) -> dict:
    """The open_clip config dict of a registered model name (a copy)."""
    import open_clip

    register_model_configs()
    cfg = open_clip.get_model_config(model_name)
    if cfg is None:
        raise ValueError(f"unknown open_clip model {model_name!r}")
    return json.loads(json.dumps(cfg))
