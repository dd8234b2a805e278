"""Bar chart for bench/peers: req/s and CPU µs/request per scenario, from peers.json.

    bench/.venv-peers/bin/python bench/peers/chart.py bench/results/peers.json out.png
"""

from __future__ import annotations

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def main(src: str, dst: str) -> None:
    with open(src) as f:
        data = json.load(f)
    rows = data["scenarios"]
    meta = data["meta"]
    labels = [r["label"] + ("" if r["verified"] in (None, True) else "  [flagged: failed a check]")
              for r in rows]
    rps = [r["rps_median"] for r in rows]
    lo = [r["rps_median"] - min(r["rps"]) for r in rows]
    hi = [max(r["rps"]) - r["rps_median"] for r in rows]
    cpu = [0.0 if r["cpu_is_origin"] or r["cpu_us_per_request"] is None
           else r["cpu_us_per_request"] for r in rows]
    colours = ["#888888" if r["name"] in ("direct", "bare") else
               "#2a7ab0" if r["name"].startswith("linewarden") else "#d08c3c" for r in rows]

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 0.55 * len(rows) + 2.2),
                                   gridspec_kw={"width_ratios": [3, 2]})
    y = list(range(len(rows)))[::-1]
    ax1.barh(y, rps, xerr=[lo, hi], color=colours, capsize=3)
    ax1.set_yticks(y, labels)
    ax1.set_xlabel("req/s (median of rounds; bars: min\u2013max)")
    for yi, v, h in zip(y, rps, hi, strict=True):
        ax1.text(v + h, yi, f"  {v:,.0f}", va="center", ha="left", fontsize=8)
    ax1.set_xlim(0, max(rps) * 1.25)
    ax2.barh(y, cpu, color=colours)
    ax2.set_yticks(y, [""] * len(rows))
    ax2.set_xscale("log")
    ax2.set_xlabel("proxy CPU µs per request (log scale)")
    for yi, v in zip(y, cpu, strict=True):
        if v:
            ax2.text(v, yi, f"  {v:,.1f}", va="center", ha="left", fontsize=8)
    fig.suptitle(f"Header enrichment, one core per proxy — wrk -t1 -c{meta['connections']}, "
                 f"{meta['rounds']}\u00d7{meta['seconds']:g} s interleaved, {meta['date']} UTC, "
                 f"{meta['cpu']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(dst, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
