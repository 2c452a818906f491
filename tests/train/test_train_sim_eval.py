"""In-loop simulator evaluation: `vla train --eval-every N --eval-benchmark NAME` (real ManiSkill rollouts)."""

from __future__ import annotations

import json

import pytest
from synthetic_episodes import write_episode
from trainer_fixtures import micro_config

pytestmark = [pytest.mark.maniskill, pytest.mark.render]


def test_current_weights_are_rolled_out_and_logged(tmp_path):
    from scripts.sim_eval import make_sim_evaluator
    from train.trainer import train

    data = tmp_path / "data"
    data.mkdir()
    for i in range(3):
        write_episode(
            data / f"episode_{i}.hdf5",
            episode=i,
            num_steps=20,
            task="DualArmLiftBar-v1",
            seen=("lift the bar with both arms",),
            unseen=("raise the beam",),
        )
    spec = tmp_path / "tiny-bench.yaml"
    spec.write_text(
        'name: tiny-bench\ndescription: one short episode\ntasks: [DualArmLiftBar-v1]\nseeds: "100000:100002"\n'
        "max_episode_steps: {DualArmLiftBar-v1: 5}\nimage_size: 32\nvideo_cameras: [head]\n"
    )
    run = tmp_path / "run"
    cfg = micro_config(data, run, steps=2, bench_every=2, benchmark=str(spec))
    result = train(cfg, evaluate=make_sim_evaluator(str(spec), run))

    results = json.loads((run / "bench" / "step_2" / "results.json").read_text())
    assert results["per_task"]["DualArmLiftBar-v1"]["episodes"] == 2
    assert results["policy"]["cameras"] == ["head", "left_wrist"]
    episodes = [json.loads(line) for line in (run / "bench" / "step_2" / "episodes.jsonl").read_text().splitlines()]
    assert {e["seed"] for e in episodes} == {100000, 100001}
    assert all(e["status"] == "ok" and e["episode_len"] == 5 and e["policy_calls"] >= 1 for e in episodes)
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in logged if "bench/success_rate" in r]
    assert [r["step"] for r in evals] == [2]
    assert evals[0]["bench/DualArmLiftBar-v1/success_rate"] == 0.0  # two training steps do not lift a bar
    assert result.step == 2


def test_unknown_benchmark_fails_before_training(tmp_path):
    from scripts.sim_eval import make_sim_evaluator

    with pytest.raises(ValueError, match="smoke"):
        make_sim_evaluator("smok", tmp_path / "run")
    assert not (tmp_path / "run").exists()
