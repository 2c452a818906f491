"""Grasp probe: where is the gripper when a policy, in the loop, first commands it closed?

    python -m benchmarks.probe_grasp --checkpoint runs/diag2-pick-pn01/checkpoints/last [--checkpoint ...] \
        [--task DualArmPickColorCube-v1] [--seeds 100000:100012] [--out benchmarks/results/grasp_probe.json]

For each seed the policy runs closed loop (every chunk executed in full) until one arm's gripper command first
goes below 0 (``envs.layout``: +1 open, -1 closed) or ``--max-steps`` pass. At that control step the probe
records that arm's TCP position minus the instructed object's centre (privileged ``target_pose``), in cm, and
whether the closing arm is the instructed one (privileged ``side``: -1 left, +1 right). An arm that closes 5 cm
above the object or on the other side tells a grasp failure from a reach failure, which success rates do not.
The summary also fits, per axis, the closing TCP position against the object's position over the seeds
(``localization``): slope ~1 means the policy goes where the object is, slope ~0 that it goes to one place
whatever the layout (the mean grasp point), which succeeds only on layouts near the mean.
For tasks whose privileged state has ``target_pose`` and ``side``: DualArmPickColorCube-v1, DualArmPickSideCube-v1.

Writes a JSON result (benchmarks.common header); prints one line per checkpoint.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import result_header, write_result
from envs.layout import ACTION_LAYOUT
from harness.benchmark_specs import parse_seeds

GRIPPER = {"left": ACTION_LAYOUT.index("left_gripper"), "right": ACTION_LAYOUT.index("right_gripper")}
"""Action indices of the two grippers."""


def first_close(policy: Any, env: Any, seed: int, max_steps: int) -> dict[str, Any]:
    """Roll ``policy`` out on ``env`` (a ``DualArmEnv`` with one sub-env) from ``seed`` until a gripper command
    first goes below 0.

    Returns: {"seed", "step" (control step of the command, None if none came), "arm" ("left"/"right"/None),
    "instructed_arm" (bool or None), "offset_cm" ([dx, dy, dz] TCP - target centre, world frame, or None),
    "target_cm" ([x, y, z] of the target centre, world frame; y times the instructed side, so both sides' objects
    lie at y > 0 and one fit covers them)}.

    Raises:
        KeyError: the task's privileged state has no ``target_pose`` or ``side``.
    """
    from harness.rollout import policy_observation

    obs, _ = env.reset(seed=seed)
    state = obs["privileged"]
    missing = [k for k in ("target_pose", "side") if k not in state]
    if missing:
        raise KeyError(f"{env.spec.name if env.spec else env}: privileged state has no {missing} (see --help)")
    target = np.asarray(state["target_pose"][0][:3], dtype=np.float64)
    instructed = "left" if float(state["side"][0][0]) < 0 else "right"
    agents = {"left": env.unwrapped.left_agent, "right": env.unwrapped.right_agent}
    cameras = policy.metadata.cameras
    sign = np.array([1.0, -1.0 if instructed == "left" else 1.0, 1.0])
    where = [round(float(x), 2) for x in target * sign * 100]
    step = 0
    while step < max_steps:
        chunk = np.asarray(policy.predict_action_chunk(policy_observation(obs, cameras, False)))[0]
        for action in chunk:
            closing = [arm for arm, i in GRIPPER.items() if action[i] < 0]
            if closing:
                arm = closing[0] if len(closing) == 1 else instructed
                tcp = agents[arm].tcp.pose.p[0].cpu().numpy().astype(np.float64)
                off = [round(float(x), 2) for x in (tcp - target) * 100]
                return {
                    "seed": seed,
                    "step": step,
                    "arm": arm,
                    "instructed_arm": arm == instructed,
                    "offset_cm": off,
                    "target_cm": where,
                }
            obs, *_ = env.step(action[None])
            step += 1
            if step >= max_steps:
                break
    return {"seed": seed, "step": None, "arm": None, "instructed_arm": None, "offset_cm": None, "target_cm": where}


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts, and mean / 90th-percentile |dx|, |dy| and dz (cm) over the closes by the instructed arm.

    A close by the other arm is a reach failure (its offset is the ~35 cm between the two objects), counted in
    ``closed - closed_instructed_arm`` and left out of the offsets, which measure grasp precision.
    """
    closed = [r for r in rows if r["step"] is not None]
    right_arm = [r for r in closed if r["instructed_arm"]]
    out: dict[str, Any] = {"seeds": len(rows), "closed": len(closed), "closed_instructed_arm": len(right_arm)}
    if right_arm:
        off = np.array([r["offset_cm"] for r in right_arm])
        for name, col in (("abs_dx_cm", np.abs(off[:, 0])), ("abs_dy_cm", np.abs(off[:, 1])), ("dz_cm", off[:, 2])):
            out[name] = {"mean": round(float(col.mean()), 2), "p90": round(float(np.percentile(col, 90)), 2)}
    if len(right_arm) >= 3:
        out["localization"] = localization(right_arm)
    if closed:
        out["mean_close_step"] = round(float(np.mean([r["step"] for r in closed])), 1)
    return out


def localization(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per axis x and y: least-squares ``slope`` and ``corr`` of the closing TCP position on the target's position
    (cm, y mirrored by side as in :func:`first_close`) over ``rows``, and ``blind_abs_err_cm``, the mean |error|
    of a policy that always closed at the rows' mean target (the error a slope-0 policy cannot beat).

    Raises:
        ValueError: fewer than 3 rows, or a row without ``target_cm``.
    """
    if len(rows) < 3 or any(r.get("target_cm") is None for r in rows):
        raise ValueError(f"localization: need >= 3 closes with target_cm, got {len(rows)}")
    target = np.array([r["target_cm"] for r in rows], dtype=np.float64)
    sign = np.array([[1.0, -1.0 if r["arm"] == "left" else 1.0, 1.0] for r in rows])
    tcp = target + np.array([r["offset_cm"] for r in rows], dtype=np.float64) * sign
    out = {}
    for i, axis in enumerate("xy"):
        t, c = target[:, i], tcp[:, i]
        spread = float(np.var(t))
        slope = float(np.cov(t, c, bias=True)[0, 1] / spread) if spread > 0 else float("nan")
        corr = float(np.corrcoef(t, c)[0, 1]) if spread > 0 and np.var(c) > 0 else float("nan")
        blind = float(np.mean(np.abs(t - t.mean())))
        out[axis] = {"slope": round(slope, 2), "corr": round(corr, 2), "blind_abs_err_cm": round(blind, 2)}
    return out


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, nargs="+", required=True, help="checkpoint folder(s)")
    p.add_argument("--task", default="DualArmPickColorCube-v1")
    p.add_argument("--seeds", default="100000:100012", help="START:END (end exclusive), a,b,c or one seed")
    p.add_argument("--max-steps", type=int, default=64, help="control steps before giving up on a close")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results/grasp_probe.json")
    args = p.parse_args(argv)
    try:
        args.seed_list = parse_seeds(args.seeds)
    except ValueError as err:
        p.error(f"--seeds: {err}")
    if args.max_steps < 1:
        p.error(f"--max-steps must be >= 1, got {args.max_steps}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Probe every --checkpoint on --task, write --out; returns 0. Errors: see first_close and
    CheckpointPolicy.from_dir (a folder that is not a checkpoint)."""
    import torch

    from envs.wrapper import make_env
    from policies.checkpoint import CheckpointPolicy

    args = _parse_args(argv)
    torch.set_num_threads(args.threads)
    results = {}
    for ckpt in args.checkpoint:
        policy = CheckpointPolicy.from_dir(ckpt)
        env = make_env(args.task, cameras=policy.metadata.cameras, image_size=policy.metadata.image_size or 128)
        try:
            rows = [first_close(policy, env, s, args.max_steps) for s in args.seed_list]
        finally:
            env.close()
        results[str(ckpt)] = {"summary": summarize(rows), "per_seed": rows}
        s = results[str(ckpt)]["summary"]
        print(f"{ckpt}: closed on {s['closed']}/{s['seeds']} seeds, instructed arm {s['closed_instructed_arm']}, {s}")
    payload = {
        **result_header(
            "grasp probe: gripper offset from the target at the first close command", "benchmarks.probe_grasp", argv
        ),
        "task": args.task,
        "seeds": args.seeds,
        "max_steps": args.max_steps,
        "per_checkpoint": results,
    }
    write_result(args.out, payload)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
