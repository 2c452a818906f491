"""Training step time of the demo recipe in float32, bf16 and ``auto``, in one run -> results/precision.json.

    .venv/bin/python -m benchmarks.bench_precision [--data DIR] [--steps 40]

``auto`` must land within 1.1x of the faster of float32 and bf16 on whatever CPU this runs on: it picks bf16 only
where ``envs.machine.bf16_probe`` measures a bf16 matmul faster than float32 (on an AVX2-only CPU bf16 is ~75x
slower; with AMX it is faster). Each precision trains ``benchmarks/recipes/tiny-liftbar.yaml`` for ``steps`` steps
in its own `vla train` process, in the order float32, bf16, auto, float32 (the repeat shows the machine's drift);
step time is the median over the logged windows after the first (``train/samples_per_s``, batch 16). Without
``--data`` 8 demos are recorded first (head camera, 128 px, as the demo).
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import record_demo_data, result_header, vla_command, write_result

RESULTS = Path(__file__).resolve().parent / "results" / "precision.json"
RECIPE = Path(__file__).resolve().parent / "recipes" / "tiny-liftbar.yaml"


@dataclasses.dataclass
class PrecisionBenchConfig:
    """Precision benchmark settings."""

    data: Path | None = None
    """Episode folder (default: record 8 LiftBar demos into a temporary folder)."""
    steps: int = 40
    """Training steps per precision (logged every 5; the first window is warm-up)."""
    out: Path = RESULTS
    """Output JSON."""


def train_once(data: Path, run: Path, precision: str, steps: int) -> dict:
    """Train the recipe ``steps`` steps at ``precision``; returns its median step time and what auto chose."""
    cmd = vla_command(
        "train",
        "--config",
        str(RECIPE),
        "--data",
        str(data),
        "--out",
        str(run),
        "--steps",
        str(steps),
        "--warmup-steps",
        "1",
        "--mixed-precision",
        precision,
        "--log-every",
        "5",
        "--save-every",
        str(10 * steps),
        "--val-every",
        str(10 * steps),
        "--no-progress",
    )
    proc = subprocess.run(cmd, check=True, capture_output=True, text=True)
    chosen = next(
        (line.split(":", 1)[1].strip() for line in proc.stderr.splitlines() if line.startswith("mixed precision:")),
        None,
    )
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "train/samples_per_s" in r][1:]
    step_s = [16 / r["train/samples_per_s"] for r in rows]
    return {
        "precision": precision,
        "resolved": chosen,
        "step_s_median": round(statistics.median(step_s), 4),
        "windows": len(step_s),
        "command": " ".join(cmd[3:]),
    }


def main(argv: list[str] | None = None) -> int:
    import tyro

    from envs.machine import bf16_probe

    cfg = tyro.cli(PrecisionBenchConfig, args=argv)
    with tempfile.TemporaryDirectory(prefix="bench_precision_") as tmp:
        data = cfg.data
        if data is None:
            data = Path(tmp) / "data"
            record_demo_data(data, 8, "DualArmLiftBar-v1")
        runs = [
            train_once(data, Path(tmp) / f"run{i}-{p}", p, cfg.steps)
            for i, p in enumerate(("no", "bf16", "auto", "no"))
        ]
    fp32 = min(r["step_s_median"] for r in runs if r["precision"] == "no")
    bf16 = next(r["step_s_median"] for r in runs if r["precision"] == "bf16")
    auto = next(r for r in runs if r["precision"] == "auto")
    best = min(fp32, bf16)
    probe = bf16_probe()
    payload = {
        **result_header(
            "training step time of the demo recipe: float32 vs bf16 vs auto", "benchmarks.bench_precision", argv
        ),
        "probe": {**dataclasses.asdict(probe), "ratio": round(probe.ratio, 3), "fast": probe.fast},
        "runs": runs,
        "step_s": {"float32": fp32, "bf16": bf16, "auto": auto["step_s_median"]},
        "auto_resolved": auto["resolved"],
        "auto_over_best": round(auto["step_s_median"] / best, 3),
        "target_auto_over_best": 1.1,
    }
    write_result(cfg.out, payload)
    print(json.dumps({k: payload[k] for k in ("step_s", "auto_resolved", "auto_over_best")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
