"""Packaging: the import works with or without the compiled extension and reports its backends."""

import subprocess
import sys
import textwrap

import advsimplex


def test_public_api_names():
    for name in ("simplex_alignment", "AdvSimplexLoss", "simplex_head", "pair_index", "backends", "pgd_trajectory"):
        assert hasattr(advsimplex, name), name


def test_import_without_compiled_extension():
    code = textwrap.dedent(
        """
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name == "advsimplex._C":
                    raise ImportError("blocked for the test")
        sys.meta_path.insert(0, Block())
        import advsimplex
        report = advsimplex.backends()
        assert report["reference"][0] and not report["cpp"][0], report
        assert "not importable" in report["cpp"][1], report
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("ok")
