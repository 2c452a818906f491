"""In-loop simulator benchmarks for `vla train --bench-every N --benchmark NAME`.

train/ must not import harness/, so the CLI layer (the one place allowed to import every package) builds the
hook: at every evaluation step the trainer hands over its CURRENT in-memory model, processor, norm stats and
config; they are wrapped as a :class:`policies.checkpoint.CheckpointPolicy` (no checkpoint round trip) and
rolled out with the harness on the named benchmark, in-process, into ``RUN/bench/step_{N}/`` (episodes.jsonl,
results.json), with the visual quality the training frames were rendered with. The returned success rates are
logged by the trainer under ``bench/`` (TensorBoard, metrics.jsonl).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any


def make_sim_evaluator(
    benchmark: str, run_dir: Path, video: str = "none", max_episode_steps: int | None = None
) -> Callable[[int, Callable[[], Any]], Mapping[str, float]]:
    """Return ``evaluate(step, factory) -> {"success_rate": x, "<task>/success_rate": y, ...}``.

    Args:
        benchmark: a benchmark name (harness/specs) or YAML path; checked now, so a typo fails before training.
        run_dir: the training run folder; results go to ``run_dir/bench/step_{N}``.
        video: ``none`` | ``failures`` | ``all`` for the evaluation rollouts.
        max_episode_steps: override the benchmark's horizons.

    Raises:
        ValueError: unknown benchmark (lists the known ones).
    """
    from harness.benchmark_specs import load_benchmark

    load_benchmark(benchmark)

    def evaluate(step: int, factory: Callable[[], Any]) -> Mapping[str, float]:
        import json

        from harness.bench import run_bench
        from harness.config import BenchConfig
        from policies.checkpoint import CheckpointPolicy

        model, processor, stats, config = factory()
        policy = CheckpointPolicy(model, processor, stats, config, name=f"in-loop:{run_dir.name}@{step}")
        out = Path(run_dir) / "bench" / f"step_{step}"
        trained = list(policy.metadata.trained_visual_quality or ["fast"])
        cfg = BenchConfig(
            policy=policy.metadata.name,
            benchmark=benchmark,
            out=out,
            video=video,
            resume=out.exists(),
            max_episode_steps=max_episode_steps,
            progress=False,
            visual_quality=trained[0],
        )
        run_bench(cfg, policy_factory=lambda: policy)
        results = json.loads((out / "results.json").read_text())
        metrics = {"success_rate": results["overall"]["success_rate"] or 0.0}
        for task, row in results["per_task"].items():
            metrics[f"{task}/success_rate"] = row["success_rate"] or 0.0
        return metrics

    return evaluate
