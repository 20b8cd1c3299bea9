"""``python -m advsimplex``: report the installation (versions, devices, kernel backends)."""

from __future__ import annotations

import platform

import torch

import advsimplex


def main() -> None:
    print(f"advsimplex {advsimplex.__version__}  python {platform.python_version()}  torch {torch.__version__}")
    try:
        import triton

        print(f"triton {triton.__version__}")
    except ImportError:
        print("triton: not installed")
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none visible"
    print(f"CPU threads {torch.get_num_threads()}  GPU: {gpu}")
    print("backends:")
    for name, (ok, why) in advsimplex.backends().items():
        print(f"  {name:10s} {'yes' if ok else 'no ':3s}  {why}")


if __name__ == "__main__":
    main()
