"""Build the `advsimplex` package and its compiled extension `advsimplex._C`.

Build knobs (environment variables, as in flash-attention's setup.py):

- ``FORCE_CUDA=1``      build the CUDA kernels even when no GPU is visible (needs nvcc);
  ``FORCE_CUDA=0``      never build them. Unset: build them when a GPU is visible.
- ``TORCH_CUDA_ARCH_LIST``  architectures for nvcc, e.g. ``"9.0"``. A GPU-less CUDA
  build needs it (torch's arch detection fails without a device); default here "8.0;9.0".
- ``CUDA_HOME``         the toolkit; default ``/usr/local/cuda`` when it exists.
- ``MAX_JOBS``, ``NVCC_THREADS``  parallelism of the build.
- ``ADVSIMPLEX_CPU_ARCH``  ``-march`` of the C++ kernels, e.g. ``native`` (fastest, for the machine that
  builds it only) or ``x86-64-v3``. Unset or empty: no ``-march`` flag, the compiler's portable default, so
  that the binary runs on any CPU of its architecture.

The Triton kernels' source folder ``simplex_kernels/`` is installed as the subpackage
``advsimplex.triton_kernels`` (no top-level package of its own).

The C++ CPU kernels are always built. Install with ``pip install --no-build-isolation -e .``
(``scripts/setup.sh`` does it) so that the build uses the torch already installed.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).resolve().parent


def _want_cuda() -> bool:
    force = os.environ.get("FORCE_CUDA", "").strip()
    if force == "0":
        return False
    if force == "1":
        return True
    import torch

    return bool(torch.cuda.is_available())


def _extensions():
    import torch
    from torch.utils import cpp_extension

    cpp_sources = sorted(glob.glob("csrc/*.cpp"))
    cuda_sources = sorted(glob.glob("csrc/cuda/*.cu"))  # csrc/cuda/<op>.cu beside csrc/<op>.cpp (as in extension-cpp)
    arch = os.environ.get("ADVSIMPLEX_CPU_ARCH", "").strip()
    cxx_flags = ["-O3", "-std=c++20", "-fopenmp", "-ffp-contract=fast"] + ([f"-march={arch}"] if arch else [])
    if not _want_cuda():
        return [
            cpp_extension.CppExtension(
                "advsimplex._C",
                cpp_sources,
                extra_compile_args={"cxx": cxx_flags},
                extra_link_args=["-fopenmp"],
            )
        ], cpp_extension.BuildExtension

    if torch.version.cuda is None:
        raise RuntimeError(
            "FORCE_CUDA=1 (or a visible GPU) asks for the CUDA kernels, but the installed torch "
            f"{torch.__version__} is a CPU build; install a CUDA build of torch or set FORCE_CUDA=0"
        )
    if not os.environ.get("CUDA_HOME") and Path("/usr/local/cuda").exists():
        os.environ["CUDA_HOME"] = "/usr/local/cuda"
        cpp_extension.CUDA_HOME = "/usr/local/cuda"
    if cpp_extension.CUDA_HOME is None:
        raise RuntimeError("CUDA kernels requested but no CUDA toolkit found: set CUDA_HOME to it")
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
    # torch's nvidia wheels ship headers (cusparse.h, ...) that torch's CUDA headers include.
    include_dirs = []
    try:
        import nvidia

        for base in nvidia.__path__:
            include_dirs += sorted(glob.glob(os.path.join(base, "cu*", "include")))
            include_dirs += sorted(glob.glob(os.path.join(base, "*", "include")))
    except ImportError:
        pass
    nvcc_flags = [
        "-O3",
        "-std=c++20",
        "-lineinfo",
        f"--threads={os.environ.get('NVCC_THREADS', '2')}",
    ]
    return [
        cpp_extension.CUDAExtension(
            "advsimplex._C",
            cpp_sources + cuda_sources,
            include_dirs=include_dirs,
            define_macros=[("ADVSIMPLEX_WITH_CUDA", "1")],
            extra_compile_args={"cxx": cxx_flags, "nvcc": nvcc_flags},
            extra_link_args=["-fopenmp"],
        )
    ], cpp_extension.BuildExtension


ext_modules, build_ext = _extensions()

setup(
    name="advsimplex",
    version="0.1.0",
    description="Closed-form adversarial-simplex alignment (AdvSimplex) for CLIP: kernels, training, evaluation",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    package_dir={"": "python", "advsimplex.triton_kernels": "simplex_kernels"},
    packages=[*find_packages("python"), "advsimplex.triton_kernels"],
    package_data={"advsimplex": ["configs/train/*.yaml", "configs/models/*.json", "evaluation/*.json"]},
    ext_modules=ext_modules,
    cmdclass={"build_ext": build_ext.with_options(use_ninja=True)},
    install_requires=[
        "torch",
        "torchvision",
        "open_clip_torch",
        "numpy",
        "safetensors",
        "tqdm",
        "pyyaml",
        "matplotlib",
        "tensorboard",
        "pyautoattack",
    ],
    # Readers of some suite datasets (advsimplex.evaluation.suite): Flowers102 and Stanford Cars need
    # scipy, PCAM needs h5py.
    extras_require={"suite": ["scipy", "h5py"]},
    entry_points={
        "console_scripts": [
            "advsimplex-eval=advsimplex.evaluation.cli:main",
            "advsimplex-protocol=advsimplex.protocol.cli:main",
            "advsimplex-train=advsimplex.train.cli:main",
        ]
    },
    zip_safe=False,
)
