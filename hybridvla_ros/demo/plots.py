"""The demo report's plots: success rate and latency per mode."""
from __future__ import annotations

from pathlib import Path


def write_plots(summary: dict, latencies: dict[str, list[float]], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = list(summary["modes"])
    paths = []
    fig, ax = plt.subplots(figsize=(5, 3.2))
    rates = [100 * (summary["modes"][m]["success_rate"] or 0) for m in modes]
    ax.bar(modes, rates, color=["tab:purple", "tab:blue", "tab:orange"][:len(modes)])
    ax.set_ylabel("success [%]")
    ax.set_ylim(0, 100)
    ax.set_title(f"held-out seeds, {summary['episodes_per_mode']} episodes per mode")
    for i, r in enumerate(rates):
        ax.text(i, r + 2, f"{r:.0f}%", ha="center")
    fig.tight_layout()
    paths.append(out / "success_rate.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for m in modes:
        if latencies[m]:
            ax.hist(latencies[m], bins=30, alpha=0.6, label=m)
    ax.set_xlabel("observation-to-target latency [ms]")
    ax.set_ylabel("control steps")
    ax.legend()
    fig.tight_layout()
    paths.append(out / "latency.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
    return paths
