"""The installation report: versions, devices and which kernel backends are usable here
(``python -m advsimplex --info``)."""

from __future__ import annotations

import platform

import torch


def report(short: bool = False) -> None:
    """Print versions and devices (and, unless ``short``, which kernel backends are usable)."""
    import advsimplex

    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none visible"
    print(f"advsimplex {advsimplex.__version__}  python {platform.python_version()}  torch {torch.__version__}")
    if short:
        print(f"CPU threads {torch.get_num_threads()}  GPU: {gpu}")
        return
    try:
        import triton

        print(f"triton {triton.__version__}")
    except ImportError:
        print("triton: not installed")
    print(f"CPU threads {torch.get_num_threads()}  GPU: {gpu}")
    print("backends:")
    for name, (ok, why) in advsimplex.backends().items():
        print(f"  {name:10s} {'yes' if ok else 'no ':3s}  {why}")
