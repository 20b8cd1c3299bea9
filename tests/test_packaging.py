"""setup.py: what it installs and how it builds, read from the real ``setup()`` call (setuptools' ``setup`` is
replaced by a recorder, so nothing is built): dependencies cover every third-party import, package-data globs
match real files, the default C++ flags are portable, and the Triton kernels live inside the advsimplex package.
"""

from __future__ import annotations

import ast
import glob
import importlib
import runpy
import sys
from pathlib import Path

import pytest
import setuptools

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [ROOT / "python" / "advsimplex", ROOT / "simplex_kernels"]

# import name -> distribution name, where they differ
DISTRIBUTIONS = {"open_clip": "open_clip_torch", "yaml": "pyyaml", "PIL": "pillow"}
# imported only where the feature needs them, with a clear error otherwise (setup.py extras or torch's own deps)
OPTIONAL = {"scipy", "h5py", "triton", "PIL"}


def run_setup(monkeypatch, **env) -> dict:
    """The keyword arguments of setup.py's ``setup()`` call under the given environment (no CUDA build)."""
    recorded: dict = {}
    monkeypatch.setattr(setuptools, "setup", lambda **kwargs: recorded.update(kwargs))
    monkeypatch.setenv("FORCE_CUDA", "0")
    monkeypatch.delenv("ADVSIMPLEX_CPU_ARCH", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(ROOT)
    runpy.run_path(str(ROOT / "setup.py"), run_name="setup")
    return recorded


def third_party_imports() -> set[str]:
    names: set[str] = set()
    for folder in SOURCES:
        for path in folder.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    names.update(alias.name.split(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n not in ("advsimplex", "__future__")}


def test_install_requires_covers_every_import(monkeypatch):
    required = {r.split("[")[0].split("=")[0].split(">")[0].strip().lower() for r in run_setup(monkeypatch)[
        "install_requires"]}  # fmt: skip
    missing = {
        DISTRIBUTIONS.get(name, name) for name in third_party_imports() - OPTIONAL
    } - required  # fmt: skip
    assert not missing, f"imported but not in install_requires: {sorted(missing)}"
    assert {"tensorboard", "torchvision"} <= required  # torch.utils.tensorboard; torchvision datasets


def test_package_data_globs_match_files(monkeypatch):
    kwargs = run_setup(monkeypatch)
    for package, patterns in kwargs["package_data"].items():
        folder = ROOT / "python" / Path(*package.split("."))
        for pattern in patterns:
            assert glob.glob(str(folder / pattern)), f"package_data {package}: {pattern!r} matches no file"


@pytest.mark.parametrize(("arch", "flag"), [(None, None), ("", None), ("native", "-march=native"), ("x86-64-v3",
                                            "-march=x86-64-v3")])  # fmt: skip
def test_cpu_arch_knob(monkeypatch, arch, flag):
    env = {} if arch is None else {"ADVSIMPLEX_CPU_ARCH": arch}
    (extension,) = run_setup(monkeypatch, **env)["ext_modules"]
    flags = extension.extra_compile_args["cxx"]
    marches = [f for f in flags if f.startswith("-march")]
    assert marches == ([flag] if flag else []), flags


def test_triton_kernels_live_in_the_advsimplex_namespace(monkeypatch):
    kwargs = run_setup(monkeypatch)
    assert kwargs["package_dir"]["advsimplex.triton_kernels"] == "simplex_kernels"
    assert not any(p.split(".")[0] == "simplex_kernels" for p in kwargs["packages"])
    module = importlib.import_module("advsimplex.triton_kernels")
    assert Path(module.__file__).resolve().parent == ROOT / "simplex_kernels"


def test_triton_modules_import_no_private_advsimplex_module():
    for path in (ROOT / "simplex_kernels").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            modules = []
            if isinstance(node, ast.ImportFrom):
                modules = [("." * node.level) + (node.module or "")]
            elif isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            for name in modules:
                assert not name.startswith(("advsimplex", ".")), f"{path.name} imports {name}"
