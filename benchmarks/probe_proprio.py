"""Proprio probe: does a checkpoint locate the object in the image or copy the arm pose from proprio?

    python -m benchmarks.probe_proprio --checkpoint runs/quality/checkpoints/step_3000 [--checkpoint ...] \
        --data DIR [--episodes 20] [--steps 8 16 24] [--shift 0.02] [--out benchmarks/results/proprio_probe.json]

For each episode (read from DIR, ideally episodes the checkpoint never trained on) and each step t, the policy
sees row t of the images and proprio and predicts a chunk; the probe reports, per t:

* ``passthrough``: the proprio x and y of both arms are shifted by ``--shift`` m while the images stay as they
  are; the mean of (change of the chunk's last action in that dimension) / shift. 0 = the action comes from the
  image, 1 = the policy copies its current pose (the "copycat" shortcut: Wen et al. 2020, Fighting Copycat Agents
  in Behavioral Cloning from Observation Histories). A copycat policy whose arm arrives off target stays there.
* ``openloop_xy_err_cm``: |xy of the chunk's last action - xy of the recorded action at that step| per arm, in
  cm (mean and 90th percentile over episodes and both arms), with the unshifted proprio.

Writes a JSON result (benchmarks.common header); prints one line per (checkpoint, t).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import result_header, write_result
from envs.layout import ACTION_LAYOUT, CAMERA_TO_HDF5_KEY

XY_DIMS = tuple(ACTION_LAYOUT.index(f"{arm}_{axis}") for arm in ("left", "right") for axis in ("x", "y"))
"""Action / proprio indices of left x, left y, right x, right y (envs.layout.ACTION_LAYOUT)."""


def load_steps(data: Path, cameras: Sequence[str], steps: Sequence[int], episodes: int) -> list[dict[str, Any]]:
    """Rows of the first ``episodes`` episode files in ``data`` (``episode_{i}.hdf5`` in index order), at each t
    in ``steps`` that leaves a full chunk's target in the episode: dicts with t, images (camera -> (1, H, W, 3)
    uint8), proprio (1, 14) float32, instruction, and the recorded ``actions`` (T, 14) float64.

    Raises:
        train.episodes.EpisodeDataError: ``data`` is missing or holds no episode files. KeyError: an episode lacks
            a camera, proprio or action (the file and key are named).
    """
    import h5py

    from train.episode_checks import read_instructions
    from train.episodes import find_episode_files

    files = find_episode_files(data)[:episodes]
    rows = []
    for _, path in files:
        with h5py.File(path, "r") as f:
            for key in [CAMERA_TO_HDF5_KEY[c] for c in cameras] + ["proprio", "action"]:
                if key not in f:
                    raise KeyError(f"{path}: no dataset {key!r} (the probe needs proprio, action and {list(cameras)})")
            actions = np.asarray(f["action"][:], dtype=np.float64)
            instruction = read_instructions(f["seen"])[0] if "seen" in f else ""
            for t in steps:
                if t < len(actions):
                    rows.append(
                        {
                            "t": t,
                            "actions": actions,
                            "instruction": instruction,
                            "images": {c: np.asarray(f[CAMERA_TO_HDF5_KEY[c]][t])[None] for c in cameras},
                            "proprio": np.asarray(f["proprio"][t], dtype=np.float32)[None],
                        }
                    )
    return rows


def probe(policy: Any, rows: Sequence[dict[str, Any]], shift: float) -> dict[int, dict[str, float]]:
    """Passthrough and open-loop xy error per step t (see the module docstring) of ``policy`` (the policy
    protocol: ``predict_action_chunk(Observation) -> (1, H, 14)``) on rows from :func:`load_steps`.

    Raises:
        ValueError: ``shift`` is 0.
    """
    from policies.base import Observation

    if shift == 0:
        raise ValueError("shift must be non-zero (m)")
    dims = list(XY_DIMS)
    horizon = int(policy.metadata.chunk_size)
    per_t: dict[int, dict[str, list[float]]] = {}

    def last_action(row: dict[str, Any], proprio: np.ndarray) -> np.ndarray:
        obs = Observation(images=row["images"], proprio=proprio, instruction=[row["instruction"]])
        return np.asarray(policy.predict_action_chunk(obs), dtype=np.float64)[0, -1]

    for row in rows:
        base = last_action(row, row["proprio"])
        shifted = row["proprio"].copy()
        shifted[0, dims] += shift
        moved = (last_action(row, shifted)[dims] - base[dims]) / shift
        target = row["actions"][min(row["t"] + horizon - 1, len(row["actions"]) - 1)]
        err = [np.linalg.norm(base[dims[i : i + 2]] - target[dims[i : i + 2]]) * 100 for i in (0, 2)]
        acc = per_t.setdefault(row["t"], {"passthrough": [], "err": []})
        acc["passthrough"].extend(moved.tolist())
        acc["err"].extend(err)
    return {
        t: {
            "passthrough": round(float(np.mean(v["passthrough"])), 3),
            "openloop_xy_err_cm": {
                "mean": round(float(np.mean(v["err"])), 2),
                "p90": round(float(np.percentile(v["err"], 90)), 2),
            },
            "samples": len(v["err"]) // 2,
        }
        for t, v in sorted(per_t.items())
    }


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--checkpoint",
        type=Path,
        action="append",
        required=True,
        help="checkpoint directory (repeat to compare several)",
    )
    parser.add_argument("--data", type=Path, required=True, help="episode folder, ideally not trained on")
    parser.add_argument("--episodes", type=int, default=20, help="first N episodes of --data")
    parser.add_argument("--steps", type=int, nargs="+", default=[8, 16, 24], help="steps t probed per episode")
    parser.add_argument("--shift", type=float, default=0.02, help="proprio x/y shift (m)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results/proprio_probe.json")
    args = parser.parse_args(argv)
    if args.episodes < 1 or args.shift == 0 or min(args.steps) < 0 or args.threads < 1:
        parser.error(
            f"need --episodes >= 1 (got {args.episodes}), --shift != 0 (got {args.shift}), --steps >= 0 "
            f"(got {args.steps}), --threads >= 1 (got {args.threads})"
        )
    return args


def main(argv: list[str] | None = None) -> int:
    """Probe every --checkpoint, write --out; returns 0. Errors: see load_steps and CheckpointPolicy.from_dir."""
    import torch

    from policies.checkpoint import CheckpointPolicy

    args = _parse_args(argv)
    torch.set_num_threads(args.threads)
    results = {}
    for ckpt in args.checkpoint:
        policy = CheckpointPolicy.from_dir(ckpt)
        rows = load_steps(args.data, policy.metadata.cameras, args.steps, args.episodes)
        results[str(ckpt)] = probe(policy, rows, args.shift)
        for t, r in results[str(ckpt)].items():
            print(
                f"{ckpt} t={t}: passthrough {r['passthrough']:.2f}, open-loop xy error "
                f"{r['openloop_xy_err_cm']['mean']:.2f} cm (p90 {r['openloop_xy_err_cm']['p90']:.2f})"
            )
    payload = {
        **result_header(
            "proprio probe: proprio passthrough and open-loop xy error per checkpoint", "benchmarks.probe_proprio", argv
        ),
        "data": str(args.data),
        "episodes": args.episodes,
        "shift_m": args.shift,
        "per_checkpoint": results,
    }
    write_result(args.out, payload)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
