"""The committed sweep specs (benchmarks/sweeps/*.yaml): each loads, every variant's recipe is a valid `vla train`
config and its bench flags a valid `vla bench` config, seeds are disjoint from the demo seeds, >= 30 per variant."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.benchmark_specs import parse_seeds
from harness.config import BenchConfig
from scripts.sweep_spec import load_sweep
from train.train_config import TrainConfig

SWEEPS = sorted((Path(__file__).resolve().parents[2] / "benchmarks" / "sweeps").glob("*.yaml"))
QUESTIONS = {"action-head", "action-tokens", "vision", "finetune", "scale"}


def test_every_design_question_has_a_sweep() -> None:
    assert {load_sweep(p).name for p in SWEEPS} == QUESTIONS


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_sweep_variants_are_valid_configs(path: Path, tmp_path: Path) -> None:
    spec = load_sweep(path)
    demo_seeds = range(10000, 10000 + 10 * int((spec.demos or {}).get("episodes", 200)))
    for name, variant in spec.variants.items():
        TrainConfig.from_flat(**{**variant["train"], "data": tmp_path, "out": tmp_path / name})
        bench = BenchConfig(**{**variant["bench"], "policy": "random", "out": tmp_path / f"b-{name}"})
        seeds = parse_seeds(bench.seeds)
        assert len(seeds) >= 30, f"{path.name}:{name}: >= 30 seeds per variant"
        assert not set(seeds) & set(demo_seeds), f"{path.name}:{name}: evaluation seeds overlap the demo seeds"
