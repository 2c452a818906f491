"""`vla sweep`: spec checks, flag building, dry runs, resume refusals, and a 2-variant sweep (L1 vs flow head) on
a synthetic dataset, benchmarked on the fake env, killed with SIGKILL mid-sweep and resumed without redoing the
finished variant, then its report."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from envs.machine import cpu_info
from scripts.sweep import Sweep, flags
from scripts.sweep_spec import SweepConfig, load_sweep

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "train"))
from trainer_fixtures import MICRO, write_dataset  # noqa: E402


def _write_spec(tmp: Path, data: Path, **extra) -> Path:
    recipe = {
        "steps": 4,
        "batch_size": 4,
        "chunk_size": 4,
        "use_proprio": True,
        "model_overrides": MICRO,
        "num_workers": 0,
        "log_every": 1,
        "save_every": 2,
        "val_fraction": 0.0,
        "threads": 1,
        "mixed_precision": "no",
    }
    (tmp / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    spec = {
        "name": "micro-heads",
        "question": "L1 or flow matching on the micro model?",
        "recipe": "recipe.yaml",
        "data": str(data),
        "bench": {
            "tasks": ["DualArmLiftBar-v1"],
            "seeds": "0:3",
            "max_episode_steps": 10,
            "video": "none",
            "env_factory": "fakes:make_fake_env",
        },
        "baseline": "l1",
        "variants": {"l1": {}, "flow": {"train": {"action_head": "flow", "flow_steps": 2}}},
        **extra,
    }
    path = tmp / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_spec_errors_name_the_file_and_key(tmp_path: Path) -> None:
    path = _write_spec(tmp_path, tmp_path / "data")
    spec = load_sweep(path)
    assert list(spec.variants) == ["l1", "flow"]
    flow = spec.variants["flow"]["train"]
    assert flow["action_head"] == "flow" and flow["model_overrides"] == MICRO and flow["steps"] == 4
    raw = yaml.safe_load(path.read_text())
    for change, message in [
        ({"baseline": "nope"}, "baseline 'nope' is not a variant"),
        ({"variants": {"l1": {}}}, "at least 2 variants"),
        ({"colour": 1}, "unknown keys \\['colour'\\]"),
        ({"variants": {"l1": {}, "bad name": {}}}, "names are folder names"),
        ({"variants": {"l1": {}, "x": {"steps": 3}}}, "variants.x: unknown keys \\['steps'\\]"),
        ({"replicates": 0}, "replicates: expected an integer >= 1, got 0"),
        ({"replicates": "3"}, "replicates: expected an integer >= 1, got '3'"),
    ]:
        path.write_text(yaml.safe_dump({**raw, **change}))
        with pytest.raises(ValueError, match=message):
            load_sweep(path)
    path.write_text(yaml.safe_dump({**raw, "recipe": "missing.yaml"}))
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        load_sweep(path)


def test_flags_are_the_commands_flat_flags() -> None:
    assert flags({"episodes": 10, "cameras": ["head", "low"], "progress": False, "resume": True, "x": None}) == [
        "--episodes",
        "10",
        "--cameras",
        "head",
        "low",
        "--no-progress",
        "--resume",
    ]


def test_report_names_each_machine_once_and_old_results_without_cpu() -> None:
    from scripts.sweep_report import _machines

    epyc = {"model": "AMD EPYC", "cores": 2, "flags": ["avx2", "fma"], "isa_caps": {}}
    capped = {**epyc, "isa_caps": {"ONEDNN_MAX_CPU_ISA": "AVX2"}}
    rows = [{"cpu": epyc}, {"cpu": epyc}, {"cpu": capped}, {"cpu": None}]
    assert _machines(rows) == (
        "AMD EPYC (2 cores; avx2 fma); AMD EPYC (2 cores; avx2 fma, ONEDNN_MAX_CPU_ISA=AVX2); not recorded"
    )
    assert _machines([]) == "none"


def test_dry_run_prints_every_command_and_writes_nothing(tmp_path: Path, capsys) -> None:
    spec = load_sweep(_write_spec(tmp_path, tmp_path / "data"))
    out = tmp_path / "out"
    assert Sweep(SweepConfig(spec=spec.path, out=out, dry_run=True, progress=False), spec).run() == 0
    printed = capsys.readouterr().out
    assert printed.count("$ vla train --config") == 2 and printed.count("$ vla bench --config") == 2
    assert not out.exists()


def test_a_sweep_folder_is_not_reused_without_resume_nor_for_another_spec(tmp_path: Path) -> None:
    path = _write_spec(tmp_path, tmp_path / "data")
    out = tmp_path / "out"
    out.mkdir()
    spec = load_sweep(path)
    Sweep(SweepConfig(spec=path, out=out), spec).load_state()
    with pytest.raises(ValueError, match="pass --resume"):
        Sweep(SweepConfig(spec=path, out=out), spec).load_state()
    raw = yaml.safe_load(path.read_text())
    raw["bench"]["seeds"] = "0:5"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ValueError, match="written for another spec"):
        Sweep(SweepConfig(spec=path, out=out, resume=True), load_sweep(path)).load_state()


def _state(out: Path) -> dict:
    try:
        return json.loads((out / "sweep.json").read_text())
    except (OSError, ValueError):
        return {}


@pytest.mark.slow
def test_a_killed_sweep_resumes_without_redoing_finished_variants(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "data", episodes=3)
    spec = _write_spec(tmp_path, data)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "tests" / "harness"), str(REPO)])}
    cmd = [sys.executable, "-m", "scripts.cli", "sweep", str(spec), "--out", str(out), "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        variants = _state(out).get("variants", {})
        if variants.get("l1", {}).get("benched") and variants.get("flow", {}).get("attempt_started"):
            break
        time.sleep(0.1)
    time.sleep(1.0)  # the flow variant's training is running
    assert proc.poll() is None, f"the sweep ended before the kill: {proc.stdout.read().decode()[-3000:]}"
    os.kill(proc.pid, signal.SIGKILL)  # the sweep only: its `vla train` child must die with it
    proc.wait()
    proc.stdout.close()
    l1 = out / "variants" / "l1"
    before = {p: p.stat().st_mtime_ns for p in [*(l1 / "run").rglob("*.safetensors"), l1 / "bench" / "episodes.jsonl"]}
    done = subprocess.run([*cmd, "--resume"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "l1: trained (step 4), skipped" in done.stdout and "l1: benchmarked, skipped" in done.stdout
    assert {p: p.stat().st_mtime_ns for p in before} == before, "the finished variant was not redone"
    report = json.loads((out / "report.json").read_text())
    rows = {r["variant"]: r for r in report["variants"]}
    assert set(rows) == {"l1", "flow"} and report["missing"] == []
    assert rows["flow"]["recipe"]["action_head"] == "flow" and rows["flow"]["train_steps"] == 4
    assert rows["l1"]["episodes"] == 3 and 0.0 <= rows["flow"]["vs_baseline"]["p_value"] <= 1.0
    assert (
        rows["flow"]["vs_baseline"]["n_pairs"] == 3
        and rows["flow"]["total_params"] >= rows["flow"]["trainable_params"] > 0
    )
    assert rows["l1"]["train_s"] > 0 and rows["flow"]["train_s"] > 0 and rows["flow"]["inference_ms_p50"] > 0
    for name in ("report.md", "success.svg", "index.html"):
        assert (out / name).stat().st_size > 100
    assert "| flow |" in (out / "report.md").read_text()
    assert rows["flow"]["cpu"]["model"] == cpu_info()["model"] and rows["l1"]["cpu"]["flags"] == cpu_info()["flags"]
    assert (
        f"Machine (train time and latency were measured on it): {cpu_info()['model']}"
        in (out / "report.md").read_text()
    )
    assert (out / "variants" / "flow" / "bench" / "index.html").exists(), "each variant has its gallery"


@pytest.mark.slow
def test_replicates_add_training_seeds_to_a_finished_sweep_pooled_and_paired_per_replicate(
    tmp_path: Path, monkeypatch
) -> None:
    from harness.metrics import mcnemar_exact
    from harness.review_data import load_run
    from scripts.sweep_spec import DEFAULT_TRAIN_SEED
    from train.train_config import TrainConfig

    assert TrainConfig.__dataclass_fields__["seed"].default == DEFAULT_TRAIN_SEED
    data = write_dataset(tmp_path / "data", episodes=3)
    path, out = _write_spec(tmp_path, data), tmp_path / "out"
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO / "tests" / "harness"), str(REPO)]))
    assert Sweep(SweepConfig(spec=path, out=out, progress=False), load_sweep(path)).run() == 0
    single = {r["variant"]: r for r in json.loads((out / "report.json").read_text())["variants"]}
    assert "replicates" not in single["flow"]
    weights = sorted((out / "variants" / "l1" / "run").rglob("*.safetensors"))
    before = {p: p.stat().st_mtime_ns for p in weights}

    raw = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump({**raw, "replicates": 2}, sort_keys=False))
    spec = load_sweep(path)
    assert list(spec.units) == ["l1", "l1.r1", "flow", "flow.r1"]
    assert "seed" not in spec.units["flow"]["train"] and spec.units["flow.r1"]["train"]["seed"] == 1
    assert Sweep(SweepConfig(spec=path, out=out, progress=False, resume=True), spec).run() == 0
    assert {p: p.stat().st_mtime_ns for p in weights} == before, "replicate 0 was trained again"
    last = [out / "variants" / u / "run" / "checkpoints" / "last" for u in ("l1", "l1.r1")]
    assert [json.loads((d / "config.json").read_text())["train"]["seed"] for d in last] == [0, 1]
    assert (last[0] / "model.safetensors").read_bytes() != (last[1] / "model.safetensors").read_bytes()

    report = json.loads((out / "report.json").read_text())
    assert report["replicates"] == 2 and report["missing"] == []
    rows = {r["variant"]: r for r in report["variants"]}
    for name, row in rows.items():
        reps = row["replicates"]
        assert [u["replicate"] for u in reps] == [0, 1] and [u["seed"] for u in reps] == [None, 1]
        assert row["episodes"] == 6 and row["successes"] == sum(u["successes"] for u in reps)
        assert reps[0]["successes"] == single[name]["successes"], "replicate 0 is the sweep's first run"
        assert row["replicate_range"] == [min(u["success_rate"] for u in reps), max(u["success_rate"] for u in reps)]
    b = c = 0
    for suffix in ("", ".r1"):
        base, var = (load_run(out / "variants" / f"{n}{suffix}" / "bench") for n in ("l1", "flow"))
        for key, ep in base.episodes.items():
            b += bool(ep.succeeded("success_once")) and not var.episodes[key].succeeded("success_once")
            c += bool(var.episodes[key].succeeded("success_once")) and not ep.succeeded("success_once")
    vs = rows["flow"]["vs_baseline"]
    assert vs["n_pairs"] == 6 and vs["replicates_paired"] == 2
    assert (vs["baseline_only_successes"], vs["variant_only_successes"], vs["p_value"]) == (b, c, mcnemar_exact(b, c))
    md = (out / "report.md").read_text()
    assert "| per replicate |" in md and "* flow (replicate 1): `vla train --config" in md


def test_variants_run_at_once_as_ray_tasks(tmp_path: Path, ray_cluster, monkeypatch) -> None:
    data = write_dataset(tmp_path / "data", episodes=3)
    spec_path = _write_spec(tmp_path, data)
    raw = yaml.safe_load(spec_path.read_text())
    slow = {"steps": 12, "log_every": 1, "save_every": 12}  # long enough for the two trainings to overlap
    raw["variants"] = {"l1": {"train": slow}, "flow": {"train": {**slow, "action_head": "flow", "flow_steps": 2}}}
    spec_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    monkeypatch.chdir(REPO)
    out = tmp_path / "out"
    cfg = SweepConfig(spec=spec_path, out=out, progress=False, executor="ray", cpus_per_variant=1)
    start = time.monotonic()
    assert Sweep(cfg, load_sweep(spec_path)).run() == 0
    wall = time.monotonic() - start
    state = _state(out)["variants"]
    assert all(v["trained"] and v["benched"] and v["train_s"] > 0 and v["step"] == 12 for v in state.values())
    busy = sum(v["train_s"] + v["bench_s"] for v in state.values())
    assert wall < 0.9 * busy, f"the variants ran one after another ({wall:.0f} s for {busy:.0f} s of work)"
    report = json.loads((out / "report.json").read_text())
    assert {r["variant"] for r in report["variants"]} == {"l1", "flow"} and report["missing"] == []
    assert (out / "variants" / "flow" / "bench" / "index.html").exists()
    # a resumed Ray sweep has nothing left to do
    resumed = SweepConfig(spec=spec_path, out=out, progress=False, executor="ray", cpus_per_variant=1, resume=True)
    assert Sweep(resumed, load_sweep(spec_path)).run() == 0


def test_ray_sweep_settings_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cpus_per_variant"):
        SweepConfig(spec=tmp_path / "s.yaml", out=tmp_path / "o", executor="ray", cpus_per_variant=0)
    with pytest.raises(ValueError, match="needs --executor ray"):
        SweepConfig(spec=tmp_path / "s.yaml", out=tmp_path / "o", ray_address="auto")
