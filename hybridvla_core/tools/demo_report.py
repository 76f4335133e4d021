"""The demo's ROS-free half: the summary of a `hybridvla demo` run (success per mode, control rate, latency,
guard events, fusion rate) and its table. Which episodes it plays (instruction variants, held-out seeds, the
settle time at the limit) is hybridvla_core.sim.episodes; the run itself is hybridvla_ros.demo.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def percentiles(values: Sequence[float], qs: Sequence[int] = (50, 90, 99)) -> dict[str, float | None]:
    """{"p50": ..., ...} of values (None when there are none)."""
    arr = np.asarray(list(values), dtype=float)
    return {f"p{q}": (float(np.percentile(arr, q)) if arr.size else None) for q in qs}


def summarize_mode(episodes: list[dict], actions: list[dict], guard_kinds: list[str]) -> dict:
    """Summary of one mode's run.

    episodes:    {"seed", "success": bool, "duration_s", "steps"} per episode
    actions:     {"stamp_s": arrival time [s], "total_ms", "stages": {name: ms}, "source": "fused" | ...}
                 per PolicyAction
    guard_kinds: kind name of each GuardEvent
    """
    n = len(episodes)
    ok = sum(bool(e["success"]) for e in episodes)
    stamps = np.sort(np.asarray([a["stamp_s"] for a in actions], dtype=float))
    gaps = np.diff(stamps)
    gaps = gaps[gaps < 1.0]  # gaps across an episode boundary (reset, disabled policy) are no control period
    stage_names = sorted({k for a in actions for k in a["stages"]})
    sources: dict[str, int] = {}
    for a in actions:
        sources[a["source"]] = sources.get(a["source"], 0) + 1
    guards: dict[str, int] = {}
    for kind in guard_kinds:
        guards[kind] = guards.get(kind, 0) + 1
    return {
        "episodes": n,
        "successes": ok,
        "success_rate": ok / n if n else None,
        "seeds": [e["seed"] for e in episodes],
        "episode_success": [bool(e["success"]) for e in episodes],
        "episode_duration_s": [e["duration_s"] for e in episodes],
        "actions": len(actions),
        "control_rate_hz": float(1.0 / np.median(gaps)) if gaps.size else None,
        "latency_ms": percentiles([a["total_ms"] for a in actions]),
        "stage_ms": {name: percentiles([a["stages"][name] for a in actions if name in a["stages"]])
                     for name in stage_names},
        "sources": sources,
        "fusion_rate": sources.get("fused", 0) / len(actions) if actions else None,
        "guard_events": guards,
    }


def table(summary: dict) -> str:
    """The three-mode table a newcomer sees, one row per mode that ran."""
    head = (f"{'mode':<15}{'success':>12}{'rate Hz':>9}{'p50 ms':>8}{'p90 ms':>8}{'fused':>7}  guard events")
    rows = [head, "-" * len(head)]
    for mode, s in summary["modes"].items():
        lat = s["latency_ms"]
        fmt = lambda v, spec: format(v, spec) if v is not None else "-"  # noqa: E731
        guards = ", ".join(f"{k} {v}" for k, v in sorted(s["guard_events"].items())) or "none"
        rows.append(f"{mode:<15}{s['successes']:>4}/{s['episodes']:<3}{fmt(100 * (s['success_rate'] or 0), '.0f'):>4}%"
                    f"{fmt(s['control_rate_hz'], '.1f'):>9}{fmt(lat['p50'], '.0f'):>8}{fmt(lat['p90'], '.0f'):>8}"
                    f"{fmt(None if s['fusion_rate'] is None else 100 * s['fusion_rate'], '.0f'):>6}%  {guards}")
    return "\n".join(rows)
