"""Render benchmark records (from bench/run.py) as a markdown table of ratios and a PNG plot.

    python bench/report.py FILE.json [--md OUT.md] [--png OUT.png]

Speed-ups are ``median(baseline) / median(provider)`` for the same (op, mode, shape, dtype, device),
the baseline being the eager ``reference`` (``tecoa`` for full steps, ``generic`` for ``vit_jets``):
above 1 means faster.
Records from different runs are never mixed.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import defaultdict
from pathlib import Path


def fmt_time(seconds: float) -> str:
    return f"{seconds * 1e3:.3g} ms" if seconds < 1 else f"{seconds:.3g} s"


def fmt_bytes(n: int | None) -> str:
    return "–" if n is None else f"{n / 2**20:.1f} MiB"


def fmt_bandwidth(r: dict) -> str:
    """Achieved bandwidth by the op's traffic model, and its share of the device's peak when known."""
    gbps, peak = r.get("gb_per_s"), r.get("peak_gb_per_s")
    if not gbps:
        return "–"
    return f"{gbps:.3g}" + (f" ({100 * gbps / peak:.0f} %)" if peak else "")


BASELINES = {"train_step": "tecoa", "vit_jets": "generic"}
"""The provider each op's ratios are taken against (default: the eager ``reference``)."""


def markdown(records: list[dict]) -> str:
    groups = defaultdict(list)
    for r in records:
        groups[(r["op"], r["device"], r["shape"], r["dtype"], r["mode"])].append(r)
    meta = {(r["torch"], r["triton"], r["commit"]) for r in records}
    lines = []
    for torch_v, triton_v, commit in sorted(meta, key=str):
        lines.append(f"torch {torch_v}, triton {triton_v}, commit {commit}")
    lines += ["", "Speed-up: median of the baseline (the eager `reference`; `tecoa` for full training steps, the "
              "generic torch.func path for `vit_jets`) over the provider's median, measured in the same run.", "",
              "| op | device | shape | dtype | mode | provider | median | q1–q3 | speed-up | peak memory "
              "| GB/s (% of peak) | images/s |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for key in sorted(groups):
        rows = groups[key]
        base_name = BASELINES.get(key[0], "reference")
        base = next((r for r in rows if r["provider"] == base_name), None)
        for r in sorted(rows, key=lambda r: r["median_s"]):
            ratio = f"{base['median_s'] / r['median_s']:.3g}×" if base else "–"
            spread = f"{fmt_time(r['q1_s'])}–{fmt_time(r['q3_s'])}"
            ips = f"{r['images_per_s']:.3g}" if r.get("images_per_s") else "–"
            memory = fmt_bytes(r.get("peak_mem_bytes"))
            lines.append(f"| {' | '.join(map(str, key))} | {r['provider']} | {fmt_time(r['median_s'])} | {spread} "
                         f"| {ratio} | {memory} | {fmt_bandwidth(r)} | {ips} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def shape_value(shape: str, name: str) -> int | None:
    m = re.search(rf"(?:^|x){name}=(\d+)", shape)
    return int(m.group(1)) if m else None


def plot(records: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    head = [r for r in records if r["op"] == "simplex_head" and r["mode"] == "fwd+bwd" and r["dtype"] == "float32"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, axis, fixed in ((axes[0], "C", "m"), (axes[1], "m", "C")):
        series = defaultdict(list)
        for r in head:
            x, other = shape_value(r["shape"], axis), shape_value(r["shape"], fixed)
            if x is not None:
                series[(r["device"], r["provider"], other)].append((x, r["median_s"] * 1e3))
        for (device, provider, other), pts in sorted(series.items(), key=str):
            if len(pts) > 1:
                pts.sort()
                ax.plot(*zip(*pts), marker="o", label=f"{provider} ({device[:24]}, {fixed}={other})")
        ax.set_xlabel(axis)
        ax.set_ylabel("fwd+bwd median (ms)")
        ax.set_xscale("log" if axis == "C" else "linear")
        ax.set_yscale("log")
        ax.set_title(f"simplex_head time against {axis}")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, f"no {axis} sweep in these records", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("records", help="JSON written by bench/run.py")
    parser.add_argument("--md", help="write the markdown table here (default: stdout)")
    parser.add_argument("--png", help="write the plot here (default: next to the JSON)")
    args = parser.parse_args(argv)
    records = json.loads(Path(args.records).read_text())
    if not records:
        print("bench/report.py: no records", file=sys.stderr)
        return 1
    table = markdown(records)
    if args.md:
        Path(args.md).write_text(table)
    else:
        print(table)
    png = args.png or str(Path(args.records).with_suffix(".png"))
    plot(records, png)
    print(f"bench/report.py: plot -> {png}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
