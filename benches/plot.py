"""Draws the scaling figures of benches/results/*.json as PNGs next to them.

- cache.png: nanoseconds per lookup, Cache::get and the bare HashMap, by cache size
  (log scale), with the ratio annotated.
- warm.png: warm-start time per certificate by number of certificates, parallel and
  sequential, one line per backend (flat lines: the cost grows linearly).

Run through plot.sh, which installs matplotlib into a private virtual environment.
"""

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def load(suite):
    path = RESULTS / f"{suite}.json"
    if not path.exists():
        print(f"no {path.name}; run the {suite} suite first", file=sys.stderr)
        return None
    return json.loads(path.read_text())


def plot_cache(report):
    lookups = report["results"]["lookups"]
    sizes = [r["names"] for r in lookups]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(sizes, [r["hashmap_ns"] for r in lookups], "o-", label="HashMap<String, Arc<_>> (baseline)")
    ax.plot(sizes, [r["cache_ns"] for r in lookups], "s-", label="cert_core::Cache::get")
    for r in lookups:
        ax.annotate(f"{r['ratio']:.2f}x", (r["names"], r["cache_ns"]),
                    textcoords="offset points", xytext=(0, 8), ha="center")
    ax.set_xscale("log")
    ax.set_xlabel("names in the cache")
    ax.set_ylabel("ns per lookup (median of repeats)")
    ax.set_ylim(bottom=0)
    ax.set_title("Cache-hit lookup vs a bare HashMap (goal <= 1.5x)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "cache.png", dpi=110)
    plt.close(fig)


def plot_warm(report):
    runs = report["results"]["runs"]
    backends = []
    for r in runs:
        if r["backend"] not in backends:
            backends.append(r["backend"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharey=False)
    for backend in backends:
        mine = sorted((r for r in runs if r["backend"] == backend), key=lambda r: r["names"])
        sizes = [r["names"] for r in mine]
        line = axes[0].plot(sizes, [r["parallel_us_per_cert"] for r in mine], "o-", label=f"{backend}")
        axes[0].plot(sizes, [r["sequential_us_per_cert"] for r in mine], "x--",
                     color=line[0].get_color(), alpha=0.6)
        axes[1].plot(sizes, [r["parallel_ms"] for r in mine], "o-", label=backend)
    axes[0].set_xscale("log")
    axes[0].set_yscale("log")
    axes[0].set_xlabel("certificates in storage")
    axes[0].set_ylabel("us per certificate")
    axes[0].set_title("Per certificate: solid = manage (16 at once), dashed = sequential")
    axes[0].grid(True, which="both", alpha=0.3)
    axes[0].legend()
    axes[1].set_xscale("log")
    axes[1].set_yscale("log")
    axes[1].set_xlabel("certificates in storage")
    axes[1].set_ylabel("ms to load all (manage, 16 at once)")
    axes[1].set_title("Total warm-start time")
    axes[1].grid(True, which="both", alpha=0.3)
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "warm.png", dpi=110)
    plt.close(fig)


def main():
    drawn = 0
    cache = load("cache")
    if cache:
        plot_cache(cache)
        drawn += 1
    warm = load("warm")
    if warm:
        plot_warm(warm)
        drawn += 1
    print(f"drew {drawn} figure(s) in {RESULTS}")
    return 0 if drawn else 1


if __name__ == "__main__":
    sys.exit(main())
