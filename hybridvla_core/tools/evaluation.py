"""`hybridvla eval bags|sim CHECKPOINT ...`: a checkpoint offline on recorded bags, or closed loop in the simulated
lab; both take the same policy options (add_policy_arguments: --mode, --preset, --theta, --ddim-steps,
--ensemble-gripper, --device, --json), defined once here.

    hybridvla eval bags CHECKPOINT BAGS... [--compare C2] [-o OUT] [--rate 10] [--mode hybrid|...|all]

Each bag is resampled exactly as `hybridvla dataset build` does (hybridvla_core.datasets.extract), the
recorded actions are derived in each checkpoint's own action convention, and the policy predicts one action
per step (seeded, bags in the order given). Per checkpoint (and mode, with --mode all) it reports:
  - per-dimension mean absolute error and RMSE of the final, diffusion and autoregressive actions against
    the recorded ones (robot units: m, rad; gripper dims excluded from these),
  - gripper accuracy: predicted and recorded gripper on the same side of 0.5 (in the convention's sense),
  - the distribution of the mean AR token confidence, and how often the ensemble fused the two branches
    (confidence above theta) vs fell back to diffusion,
  - latency of Policy.predict [ms]: mean, p50, p90, p99, max, and the mean of every stage.
Writes OUT/summary.json (and --json FILE, the same), OUT/summary.txt (the table also printed),
OUT/steps_<label>.npz (every step's prediction, recorded action, confidence, source and latency), and PNG
plots. A bag or checkpoint that cannot be used gets one line and is left out; the others are still evaluated
(a checkpoint left out is named again at the end, and the exit status is 1). Options and output paths are
checked before any bag is read.

    hybridvla eval sim CHECKPOINT [--episodes 20] [--seed 100000] [--mode hybrid|...|all] [--time-limit 25]

runs an FR3 pick_place checkpoint closed loop through the franka_bridge's guards (hybridvla_core.sim.policy_eval)
on the demo's held-out seeds (seeds of the trained instruction variants from 100000 on, or from --seed,
skipping the checkpoint's training_seeds.json), without ROS: the quick check before `hybridvla demo`. Per mode:
the success rate, how far the failures got, where the first grasps were, the fused share and guard events;
--json FILE writes every episode.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from hybridvla_core import options
from hybridvla_core.actions import gripper_indices
from hybridvla_core.datasets.extract import BagError, Episode, TopicLayout, extract_episode, find_bags, rate_problem
from hybridvla_core.errors import UserError
from hybridvla_core.files import check_output_dir, check_output_file
from hybridvla_core.modes import GRIPPER_RULES, MODES, PRESETS

SOURCES = ("average", "diffusion", "autoregressive")  # ActionResult.source; "average" = ensemble fused
CONFIDENCE_BINS = np.linspace(0.0, 1.0, 21)


def add_policy_arguments(parser: argparse.ArgumentParser) -> None:
    """The policy options every `hybridvla eval` target honours (one definition for bags and sim)."""
    g = parser.add_argument_group("policy options (bags and sim alike)")
    g.add_argument("--mode", choices=(*MODES, "all"), default="hybrid",
                   help="which action runs: the ensemble of both branches (hybrid), one branch alone, or each mode "
                        "in turn (all) (default hybrid)")
    g.add_argument("--preset", choices=PRESETS, default=None,
                   help="named inference settings (README, 'Presets'; default: the checkpoint's own)")
    g.add_argument("--theta", type=float, default=None,
                   help="ensemble threshold 0..1 on the mean AR token confidence (default: the preset's, else the "
                        "checkpoint's)")
    g.add_argument("--ddim-steps", type=int, default=None,
                   help="DDIM denoising steps of the diffusion branch, 1..the checkpoint's diffusion steps "
                        "(default: the checkpoint's)")
    g.add_argument("--ensemble-gripper", choices=GRIPPER_RULES, default=None,
                   help="the gripper of a step that averages both branches: their binarised average (a "
                        "disagreement closes) or the autoregressive branch's (default: the checkpoint's)")
    g.add_argument("--device", type=options.device, default="cpu",
                   help="where the policy runs: cpu or cuda[:N] (default cpu)")
    g.add_argument("--json", type=Path, metavar="FILE",
                   help="also write the results as JSON (bags: the summary; sim: every episode per mode)")


def policy_option_error(args: argparse.Namespace) -> str | None:
    """The one line that refuses an out-of-range policy option, or None."""
    if args.theta is not None and not 0.0 <= args.theta <= 1.0:
        return f"--theta must be in [0, 1], got {args.theta}"
    if args.ddim_steps is not None and args.ddim_steps < 1:
        return f"--ddim-steps must be >= 1, got {args.ddim_steps}"
    return None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="target", metavar="TARGET")
    sub.required = True
    b = sub.add_parser("bags", help="run checkpoints offline on recorded bags and compare them",
                       description="run checkpoints offline on every recorded observation of some bags and compare "
                                   "their actions with the recorded ones")
    b.add_argument("checkpoint", type=Path, metavar="CHECKPOINT",
                   help="checkpoint directory (config.json, model.safetensors, ...)")
    b.add_argument("bags", nargs="+", type=Path, metavar="BAGS", help="bag directories or directories of bags")
    b.add_argument("--compare", type=Path, metavar="CHECKPOINT2", help="a second checkpoint, reported side by side")
    b.add_argument("-o", "--output", type=Path, default=Path("eval_bags"), help="output directory (eval_bags)")
    b.add_argument("--rate", type=float, default=10.0, help="steps per second [Hz] (default 10)")
    b.add_argument("--seed", type=options.seed, default=0, help="seed of the diffusion noise (0)")
    b.add_argument("--max-steps", type=int, default=None, help="at most this many steps per bag (default: all)")
    b.add_argument("--instruction", help="instruction for bags that carry none")
    TopicLayout.add_arguments(b)
    b.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    add_policy_arguments(b)

    s = sub.add_parser("sim", help="run an FR3 checkpoint closed loop (guards included) on held-out seeds in the "
                                   "simulated lab, without ROS",
                       description="run an FR3 pick_place checkpoint closed loop through the franka_bridge's guards "
                                   "on the demo's held-out seeds, without ROS")
    s.add_argument("checkpoint", type=Path, metavar="CHECKPOINT",
                   help="checkpoint directory (config.json, model.safetensors, ...)")
    s.add_argument("--episodes", type=options.positive_int, default=20, help="episodes per mode (default 20)")
    s.add_argument("--seed", type=options.seed, default=None,
                   help="first seed searched for episodes of the trained instruction variants, taken in turn, "
                        "skipping the checkpoint's training_seeds.json (default 100000: the demo's held-out seeds)")
    s.add_argument("--time-limit", type=options.positive_float, default=25.0,
                   help="simulation seconds per episode (default 25)")
    s.add_argument("--config", type=Path, help="sim parameter file (default config/sim_franka.yaml)")
    s.add_argument("--bridge-config", type=Path, help="franka_bridge parameter file with the guards "
                                                      "(default config/franka.yaml)")
    add_policy_arguments(s)


def run(args: argparse.Namespace) -> int:
    problem = policy_option_error(args)
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    if args.json is not None:  # refused before hours of evaluation, not after
        check_output_file(args.json, "--json")
    return run_sim(args) if args.target == "sim" else run_bags(args)


def check_bags_options(args: argparse.Namespace) -> None:
    """Refuse an `eval bags` option (numbers, the output directory) in one line, before any bag is read."""
    problem = rate_problem(args.rate)
    if problem is not None:
        raise UserError(f"--rate {problem}")
    if args.max_steps is not None and args.max_steps < 1:
        raise UserError(f"--max-steps must be >= 1 (leave it out for every step), got {args.max_steps}")
    check_output_dir(args.output, "-o")


def _label(path: Path, taken: set[str]) -> str:
    name = f"{path.parent.name}_{path.name}" if path.name in ("final", "checkpoint") else path.name
    label, n = name, 2
    while label in taken:
        label, n = f"{name}_{n}", n + 1
    return label


def evaluate_checkpoint(policy, episodes: list[Episode], max_steps: int = 0, log=print,
                        progress: bool = True) -> dict | None:
    """Run `policy` on every step of the usable episodes. Returns the per-step arrays, or None when no
    episode fits the checkpoint (each misfit gets one line)."""
    config = policy.config
    rows = {k: [] for k in ("bag", "time_ns", "recorded", "action", "diffusion", "ar", "confidence", "source",
                            "latency_ms")}
    stages: dict[str, list[float]] = {}
    used = []
    total = sum(len(e) if max_steps <= 0 else min(max_steps, len(e)) for e in episodes)
    bar = tqdm(total=total, desc="predict", unit="step", disable=not progress)
    for number, episode in enumerate(episodes):
        dim = 7 * len(episode.arms)
        if dim != config.action_dim:
            log(f"skipped {episode.path} for this checkpoint: it expects {config.action_dim}-dim actions "
                f"({config.action_dim // 7} arm(s)), the bag has {len(episode.arms)} arm(s) {episode.arms}")
            continue
        absent = [v for v in config.view_names if v not in episode.views]
        if absent:
            log(f"skipped {episode.path} for this checkpoint: no camera {absent} (the bag has {episode.views})")
            continue
        recorded = episode.actions(config.convention)
        steps = len(episode) if max_steps <= 0 else min(max_steps, len(episode))
        for k in range(steps):
            result = policy.predict({"images": {v: episode.images[v][k] for v in config.view_names},
                                     "state": episode.states[k], "instruction": episode.instruction})
            rows["bag"].append(number)
            rows["time_ns"].append(episode.times_ns[k])
            rows["recorded"].append(recorded[k])
            rows["action"].append(result.action)
            rows["diffusion"].append(result.diffusion_action if result.diffusion_action is not None
                                     else np.full(dim, np.nan))
            rows["ar"].append(result.ar_action if result.ar_action is not None else np.full(dim, np.nan))
            rows["confidence"].append(result.mean_confidence)
            rows["source"].append(SOURCES.index(result.source))
            rows["latency_ms"].append(result.timings_ms["total"])
            for stage, ms in result.timings_ms.items():
                stages.setdefault(stage, []).append(ms)
            bar.update(1)
        used.append(number)
    bar.close()
    if not used:
        return None
    arrays = {k: np.asarray(v) for k, v in rows.items()}
    arrays["stage_names"] = np.asarray(sorted(stages))
    arrays["stage_ms"] = np.asarray([stages[s] for s in sorted(stages)])
    return arrays


def summarize(steps: dict, theta: float, bag_names: list[str]) -> dict:
    """The reported numbers from the per-step arrays (also what the tests recompute independently)."""
    recorded, action = steps["recorded"], steps["action"]
    dim = recorded.shape[1]
    grippers = gripper_indices(dim)
    motion = [i for i in range(dim) if i not in grippers]

    def errors(predicted):
        if np.all(np.isnan(predicted)):
            return None
        diff = predicted[:, motion] - recorded[:, motion]
        return {"mae": np.abs(diff).mean(0).tolist(), "rmse": np.sqrt((diff ** 2).mean(0)).tolist(),
                "mae_mean": float(np.abs(diff).mean())}

    gripper_ok = (action[:, grippers] >= 0.5) == (recorded[:, grippers] >= 0.5)
    confidence = steps["confidence"][~np.isnan(steps["confidence"])]
    latency = steps["latency_ms"]
    counts = np.bincount(steps["source"], minlength=len(SOURCES))
    per_bag = {}
    for number in np.unique(steps["bag"]):
        sel = steps["bag"] == number
        per_bag[bag_names[number]] = {
            "steps": int(sel.sum()),
            "mae_mean": float(np.abs(action[sel][:, motion] - recorded[sel][:, motion]).mean()),
            "gripper_accuracy": float(gripper_ok[sel].mean())}
    return {
        "steps": int(len(action)), "bags": len(per_bag), "motion_dims": motion, "gripper_dims": grippers,
        "final": errors(action), "diffusion": errors(steps["diffusion"]), "autoregressive": errors(steps["ar"]),
        "gripper_accuracy": float(gripper_ok.mean()),
        "confidence": None if not len(confidence) else {
            "mean": float(confidence.mean()), "above_theta": float((confidence > theta).mean()), "theta": theta,
            **{f"p{q}": float(np.percentile(confidence, q)) for q in (5, 25, 50, 75, 95)},
            "histogram": np.histogram(confidence, CONFIDENCE_BINS)[0].tolist(),
            "bin_edges": CONFIDENCE_BINS.tolist()},
        "sources": {name: int(c) for name, c in zip(SOURCES, counts)},
        "fused_rate": float(counts[0] / len(action)), "diffusion_fallback_rate": float(counts[1] / len(action)),
        "latency_ms": {"mean": float(latency.mean()), **{f"p{q}": float(np.percentile(latency, q)) for q in (50, 90, 99)},
                       "max": float(latency.max()),
                       "stages_mean": {str(s): float(np.mean(v)) for s, v in zip(steps["stage_names"], steps["stage_ms"])}},
        "per_bag": per_bag,
    }


def table(summaries: dict[str, dict]) -> str:
    """The short text table: one column per checkpoint."""
    labels = list(summaries)
    rows = [("steps / bags", lambda s: f"{s['steps']} / {s['bags']}"),
            ("MAE final (mean, m|rad)", lambda s: f"{s['final']['mae_mean']:.4f}"),
            ("MAE diffusion", lambda s: f"{s['diffusion']['mae_mean']:.4f}" if s["diffusion"] else "-"),
            ("MAE autoregressive", lambda s: f"{s['autoregressive']['mae_mean']:.4f}" if s["autoregressive"] else "-"),
            ("gripper accuracy", lambda s: f"{100 * s['gripper_accuracy']:.1f}%"),
            ("AR confidence p50", lambda s: f"{s['confidence']['p50']:.3f}" if s["confidence"] else "-"),
            ("fused / diffusion fallback", lambda s: f"{100 * s['fused_rate']:.0f}% / {100 * s['diffusion_fallback_rate']:.0f}%"),
            ("latency mean / p99 [ms]", lambda s: f"{s['latency_ms']['mean']:.1f} / {s['latency_ms']['p99']:.1f}")]
    width = max(len(r[0]) for r in rows)
    cols = [max(len(label), 14) for label in labels]
    lines = [" " * width + " | " + " | ".join(label.ljust(c) for label, c in zip(labels, cols))]
    lines.append("-" * len(lines[0]))
    for name, fmt in rows:
        lines.append(name.ljust(width) + " | " + " | ".join(fmt(summaries[label]).ljust(c)
                                                              for label, c in zip(labels, cols)))
    return "\n".join(lines)


def plots(out: Path, summaries: dict[str, dict], steps: dict[str, dict]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["x", "y", "z", "roll", "pitch", "yaw", "gripper"]
    written = []
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / len(summaries)
    for n, (label, s) in enumerate(summaries.items()):
        dims = s["motion_dims"]
        ax.bar(np.arange(len(dims)) + n * width, s["final"]["mae"], width, label=label)
    ax.set_xticks(np.arange(len(dims)) + 0.4 - width / 2,
                  [("L " if len(dims) > 6 and d < 7 else "R " if d >= 7 else "") + names[d % 7] for d in dims])
    ax.set_ylabel("mean absolute error (m | rad)")
    ax.set_title("final action vs recorded, per dimension")
    ax.legend()
    written.append(_save(fig, out / "errors.png"))
    fig, ax = plt.subplots(figsize=(8, 4))
    for label, s in steps.items():
        conf = s["confidence"][~np.isnan(s["confidence"])]
        if len(conf):
            ax.hist(conf, CONFIDENCE_BINS, alpha=0.5, label=label)
    theta = next(iter(summaries.values()))["confidence"]
    if theta:
        ax.axvline(theta["theta"], color="k", linestyle="--", label="theta")
    ax.set_xlabel("mean AR token confidence")
    ax.set_ylabel("steps")
    ax.legend()
    written.append(_save(fig, out / "confidence.png"))
    fig, ax = plt.subplots(figsize=(8, 4))
    for label, s in steps.items():
        ax.hist(s["latency_ms"], 30, alpha=0.5, label=label)
    ax.set_xlabel("Policy.predict latency [ms]")
    ax.set_ylabel("steps")
    ax.legend()
    written.append(_save(fig, out / "latency.png"))
    for label, s in steps.items():
        first = s["bag"] == s["bag"][0]
        dims = s["recorded"].shape[1]
        fig, axes = plt.subplots(dims, 1, figsize=(8, 1.4 * dims), sharex=True)
        t = (s["time_ns"][first] - s["time_ns"][first][0]) / 1e9
        for d, ax in enumerate(axes):
            ax.plot(t, s["recorded"][first, d], "k-", label="recorded")
            ax.plot(t, s["action"][first, d], "C1.", markersize=3, label="predicted")
            ax.set_ylabel(names[d % 7], fontsize=8)
        axes[0].legend(fontsize=7, loc="upper right")
        axes[-1].set_xlabel("time in episode [s]")
        written.append(_save(fig, out / f"actions_{label}.png"))
    return written


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def run_bags(args: argparse.Namespace) -> int:
    """`hybridvla eval bags`."""
    from hybridvla_core.model.checkpoint import load_config
    from hybridvla_core.model.policy import Policy

    log = lambda line: tqdm.write(line, file=sys.stderr)  # noqa: E731 - between progress bars
    check_bags_options(args)
    layout = TopicLayout.from_arguments(args)
    episodes, left_out = [], []
    paths = find_bags(args.bags)
    for path in paths:
        try:
            episodes.append(extract_episode(path, rate_hz=args.rate, layout=layout, instruction=args.instruction))
        except BagError as exc:
            log(f"skipped {exc}")
            left_out.append({"bag": str(path), "reason": str(exc)})
    if not episodes:
        where = ", ".join(map(str, args.bags))
        log(f"hybridvla eval bags: no usable bag in {where} (see the lines above)" if paths else
            f"hybridvla eval bags: no bag in {where}: give bag directories (holding metadata.yaml, a .mcap or a "
            f".db3 file) or directories holding them")
        return 1
    bag_names = [str(e.path) for e in episodes]
    modes = list(MODES) if args.mode == "all" else [args.mode]
    summaries, steps, checkpoints, unusable = {}, {}, {}, []
    for directory in [args.checkpoint] + ([args.compare] if args.compare else []):
        name = _label(directory, set())
        for n, mode in enumerate(modes):
            label = _label(Path(name if len(modes) == 1 else f"{name}_{mode}"), set(summaries))
            try:
                load_config(directory)
                policy = Policy.from_checkpoint(directory, device=args.device, mode=mode, theta=args.theta,
                                                ddim_steps=args.ddim_steps, ensemble_gripper=args.ensemble_gripper,
                                                preset=args.preset, seed=args.seed)
            except (OSError, ValueError, KeyError) as exc:
                log(f"skipped checkpoint {directory}: {exc}")
                unusable.append({"path": str(directory), "reason": str(exc)})
                break  # the same in every mode
            mismatches = []
            say = (lambda line: (log(line), mismatches.append(line))) if n == 0 else mismatches.append  # once per bag
            arrays = evaluate_checkpoint(policy, episodes, args.max_steps or 0, log=say)
            if arrays is None:
                log(f"skipped checkpoint {directory}: no bag fits it")
                unusable.append({"path": str(directory), "reason": "no bag fits it"})
                break
            summaries[label] = summarize(arrays, policy.theta, bag_names)
            summaries[label]["mode"] = mode
            steps[label] = arrays
            checkpoints[label] = {"path": str(directory), "mode": mode, "action_dim": policy.config.action_dim,
                                  "views": policy.config.view_names, "convention": policy.config.convention.to_dict(),
                                  "not_evaluated": mismatches}
    refused = ", ".join(u["path"] for u in unusable)
    if not summaries:  # nothing written, not even the output directory
        log(f"hybridvla eval bags: no checkpoint could be evaluated: {refused} (see the lines above)")
        return 1
    args.output.mkdir(parents=True, exist_ok=True)
    for label, arrays in steps.items():
        np.savez(args.output / f"steps_{label}.npz", bag_names=np.asarray(bag_names), **arrays)
    text = table(summaries)
    summary = {"checkpoints": checkpoints, "results": summaries, "bags": bag_names, "left_out": left_out,
               "checkpoints_not_evaluated": unusable,
               "settings": {"rate_hz": args.rate, "mode": args.mode, "seed": args.seed, "max_steps": args.max_steps,
                            "preset": args.preset, "theta": args.theta, "ddim_steps": args.ddim_steps,
                            "ensemble_gripper": args.ensemble_gripper, "device": args.device,
                            "layout": layout.__dict__}}
    (args.output / "summary.txt").write_text(text + "\n")
    if not args.no_plots:
        plots(args.output, summaries, steps)
    (args.output / "summary.json").write_text(json.dumps(summary, indent=2))  # last: the run is complete
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2))
    print(text)
    print(f"written: {args.output / 'summary.json'}, summary.txt, steps_*.npz" + ("" if args.no_plots else ", *.png")
          + ("" if args.json is None else f", {args.json}"))
    if unusable:  # a checkpoint named on the command line was not evaluated: not a complete comparison
        log(f"hybridvla eval bags: not evaluated (see the lines above): {refused}")
        return 1
    return 0


def _first_grasp_summary(results) -> str:
    """Along which axis the first grasps missed: median |block - TCP| per world axis over the episodes whose
    first grasp command came within 10 cm of the block (the rest went for the wrong place)."""
    offsets = np.array([r.first_grasp_offset_m for r in results if r.first_grasp_offset_m is not None],
                       dtype=float).reshape(-1, 3)
    near = offsets[np.linalg.norm(offsets, axis=1) < 0.10]
    if not len(near):
        return "first grasp: none within 10 cm of the block"
    x, y, z = 100 * np.median(np.abs(near), axis=0)
    return (f"first grasp, block from TCP (world frame, {len(near)} within 10 cm): median |x| {x:.1f} cm, "
            f"|y| {y:.1f} cm, |z| {z:.1f} cm; over 2 cm off in x {int((np.abs(near[:, 0]) > 0.02).sum())}, "
            f"in y {int((np.abs(near[:, 1]) > 0.02).sum())}")


def _fused_percent(results) -> float:
    """Share of steps where the ensemble averaged both branches (hybrid mode)."""
    steps = sum(sum(r.sources.values()) for r in results)
    return 100.0 * sum(r.sources.get("average", 0) for r in results) / max(steps, 1)


def run_sim(args: argparse.Namespace) -> int:
    """`hybridvla eval sim`."""
    from hybridvla_core.model.checkpoint import CheckpointError, load_config as load_model_config
    from hybridvla_core.sim import episodes
    from hybridvla_core.sim.config import fr3_pick_place_config
    from hybridvla_core.sim.policy_eval import as_dicts, evaluate, franka_bridge_parameters

    if args.episodes < 1:
        print("error: --episodes must be >= 1", file=sys.stderr)
        return 2
    if not (args.checkpoint / "config.json").is_file():
        print(f"error: {args.checkpoint} is not a checkpoint directory (no config.json)", file=sys.stderr)
        return 2
    try:
        cfg = fr3_pick_place_config(args.config, "eval sim")
        train_steps = load_model_config(args.checkpoint).diffusion.train_steps
        bridge = franka_bridge_parameters(args.bridge_config)
    except (OSError, ValueError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.ddim_steps is not None and not 1 <= args.ddim_steps <= train_steps:
        print(f"error: --ddim-steps must be in 1..{train_steps} (the checkpoint's diffusion steps), "
              f"got {args.ddim_steps}", file=sys.stderr)
        return 2
    start = episodes.HELD_OUT_SEED_START if args.seed is None else args.seed
    seeds = episodes.untrained_seeds(args.checkpoint, args.episodes, start)
    modes = list(MODES) if args.mode == "all" else [args.mode]
    report = {}
    for mode in modes:
        try:
            results = evaluate(args.checkpoint, seeds, mode=mode, sim_config=cfg, bridge_parameters=bridge,
                               time_limit_s=args.time_limit, theta=args.theta, ddim_steps=args.ddim_steps,
                               ensemble_gripper=args.ensemble_gripper, preset=args.preset, device=args.device)
        except CheckpointError as exc:  # the weights are checked when the policy loads
            print(f"error: {exc}", file=sys.stderr)
            return 2
        ok = sum(r.success for r in results)
        report[mode] = as_dicts(results)
        events: dict[str, int] = {}
        for r in results:
            for kind, n in r.guard_events.items():
                events[kind] = events.get(kind, 0) + n
        print(f"{mode}: success {ok}/{len(results)} = {100.0 * ok / len(results):.1f}%  "
              f"predict p50 {np.median([r.predict_ms_median for r in results]):.0f} ms  "
              f"fused {_fused_percent(results):.0f}%  "
              f"guard events {dict(sorted(events.items())) or 'none'}")
        closest = np.array([r.closest_to_block_m for r in results])
        print(f"{'':{len(mode)}}  got as far as: TCP within 2 cm of the block {int((closest < 0.02).sum())}, "
              f"block lifted {sum(r.lifted for r in results)}, over its bowl {sum(r.over_bowl for r in results)} "
              f"(of {len(results)}); closest approach median {100 * np.median(closest):.1f} cm")
        print(f"{'':{len(mode)}}  {_first_grasp_summary(results)}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1))
    return 0
