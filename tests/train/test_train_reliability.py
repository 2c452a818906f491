"""Training runs that are interrupted, damaged or doubled: the run-folder lock, a checkpoint cut short, a dangling
``last`` link, a run killed before its first checkpoint, and kill -9 at many moments followed by ``--resume``."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
from trainer_fixtures import micro_config, write_micro_yaml

from train.logging_utils import read_metrics

pytestmark = pytest.mark.usefixtures("_restore_threads")
VLA = [sys.executable, "-m", "scripts.cli"]
REPO = Path(__file__).resolve().parents[2]


def _train(cfg):
    from train.trainer import train

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train(cfg)
    return result, [str(w.message) for w in caught]


def _losses(run: Path) -> dict[int, float]:
    """step -> train loss of a run's metrics.jsonl; fails when a step was logged twice."""
    rows = [r for r in read_metrics(run) if "train/loss" in r]
    steps = [r["step"] for r in rows]
    assert len(steps) == len(set(steps)), f"steps logged twice in {run}/metrics.jsonl: {sorted(steps)}"
    return {r["step"]: r["train/loss"] for r in rows}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data3):
    """An uninterrupted 6-step run (checkpoints at 2, 4, 6) and its per-step losses."""
    run = tmp_path_factory.mktemp("ref") / "run"
    _train(micro_config(data3, run, steps=6, save_every=2))
    return run, _losses(run)


@pytest.mark.parametrize("cut", ["model.safetensors", "training_state/optimizer.pt"])
def test_resume_skips_a_checkpoint_cut_short_and_says_so(tmp_path, data3, reference, cut):
    run = tmp_path / "run"
    _train(micro_config(data3, run, steps=4, save_every=2))
    broken = run / "checkpoints/step_4" / cut
    broken.write_bytes(broken.read_bytes()[: broken.stat().st_size // 2])
    result, said = _train(micro_config(data3, run, steps=6, save_every=2, resume=True))
    assert result.step == 6 and len(result.history) == 4, "must resume from step_2, the newest complete checkpoint"
    notes = [w for w in said if w.startswith("resuming from step_2")]
    assert notes and "step_4" in notes[0] and cut.split("/")[-1] in notes[0], said
    assert _losses(run) == pytest.approx(reference[1], rel=1e-6, abs=1e-7)


def test_resume_with_a_dangling_last_link_takes_the_newest_complete_step(tmp_path, data3, reference):
    run = tmp_path / "run"
    _train(micro_config(data3, run, steps=4, save_every=2))
    import shutil

    shutil.rmtree(run / "checkpoints/step_4")
    assert os.path.islink(run / "checkpoints/last") and not (run / "checkpoints/last").exists()
    result, said = _train(micro_config(data3, run, steps=6, save_every=2, resume=True))
    assert result.step == 6 and any(w.startswith("resuming from step_2") and "missing" in w for w in said), said
    assert _losses(run) == pytest.approx(reference[1], rel=1e-6, abs=1e-7)


def test_resume_before_the_first_checkpoint_starts_over_without_doubled_metrics(tmp_path, data3, reference):
    run = tmp_path / "run"
    run.mkdir()
    torn = json.dumps({"step": 3, "time": 0.0, "train/loss": 9.0})[:20]  # a killed first attempt's last write
    (run / "metrics.jsonl").write_text(json.dumps({"step": 1, "time": 0.0, "train/loss": 9.0}) + "\n" + torn)
    result, said = _train(micro_config(data3, run, steps=6, save_every=2, resume=True))
    assert result.step == 6 and any("starting from step 0" in w for w in said), said
    assert _losses(run) == pytest.approx(reference[1], rel=1e-6, abs=1e-7)


def test_every_checkpoint_broken_is_refused_not_overwritten(tmp_path, data3):
    from train.checkpointing import ResumeError

    run = tmp_path / "run"
    _train(micro_config(data3, run, steps=2, save_every=2))
    (run / "checkpoints/step_2/model.safetensors").write_bytes(b"")
    with pytest.raises(ResumeError, match="no complete checkpoint.*step_2"):
        _train(micro_config(data3, run, steps=4, save_every=2, resume=True))
    assert (run / "checkpoints/step_2").is_dir()


def _spawn(config: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [*VLA, "train", "--config", str(config), *extra],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )


@pytest.mark.slow
def test_two_trains_on_one_folder_one_runs_the_other_stops_at_once(tmp_path, data3):
    config = write_micro_yaml(tmp_path / "run.yaml", data3, tmp_path / "run", steps=300, save_every=100)
    first, second = _spawn(config), _spawn(config)
    done = {}
    while len(done) < 2:
        for name, proc in (("first", first), ("second", second)):
            if name not in done and proc.poll() is not None:
                done[name] = (proc.returncode, proc.stderr.read(), (first.poll(), second.poll()))
        time.sleep(0.05)
    (loser, (code, err, states)), (_, (win_code, _, _)) = sorted(done.items(), key=lambda kv: kv[1][0] == 0)
    winner = first if loser == "second" else second
    assert code == 2 and win_code == 0, done
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "is in use by vla train" in lines[0] and f"PID {winner.pid}" in lines[0], err
    assert None in states, "the refused run must stop while the other still runs"
    assert sorted(_losses(tmp_path / "run")) == list(range(1, 301)), "one run's metrics, each step once"


@pytest.mark.slow
def test_kill_9_at_ten_moments_then_resume_gives_the_uninterrupted_curve(tmp_path, data3):
    """Kills alternate between a moment inside a checkpoint write (a temporary step folder exists) and a random
    moment after the attempt logged a new step; every restart is the first command plus --resume."""
    steps = 40
    ref = tmp_path / "ref"
    _train(micro_config(data3, ref, steps=steps, save_every=2, val_every=10**6))
    config = write_micro_yaml(tmp_path / "run.yaml", data3, tmp_path / "run", steps=steps, save_every=2)
    run, rng, inside_write = tmp_path / "run", random.Random(0), 0
    for attempt in range(10):
        before = max(_losses(run), default=0) if (run / "metrics.jsonl").exists() else 0
        proc = _spawn(config, *(["--resume"] if attempt else []))  # the user's command, then the same + --resume
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            if attempt % 2 == 0 and any(p.name.startswith(".step_") for p in (run / "checkpoints").glob(".*")):
                inside_write += 1
                break
            if attempt % 2 == 1 and (run / "metrics.jsonl").exists() and max(_losses(run), default=0) > before:
                time.sleep(rng.uniform(0.0, 0.15))
                break
            time.sleep(0.002)
        assert proc.poll() is None, f"attempt {attempt} ended before the kill: {proc.stderr.read()}"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    final = _spawn(config, "--resume")
    out, err = final.communicate(timeout=300)
    assert final.returncode == 0, err
    assert inside_write >= 3, f"only {inside_write} kills landed inside a checkpoint write"
    got, want = _losses(run), _losses(ref)
    assert sorted(got) == list(range(1, steps + 1))
    assert got == pytest.approx(want, rel=1e-5, abs=1e-6), "the loss curve must match the uninterrupted run"
    assert not [p.name for p in (run / "checkpoints").iterdir() if p.name.startswith(".")], "leftover temporaries"


@pytest.mark.parametrize("workers", [0, 1])
def test_a_corrupt_frame_stops_training_naming_file_and_step_and_leaves_no_folder(tmp_path, workers, capsys):
    from test_datacheck import _corrupt_chunk
    from trainer_fixtures import write_dataset

    from scripts.cli import main

    data = write_dataset(tmp_path / "data")
    _corrupt_chunk(data / "episode_1.hdf5", frame=7)
    config = write_micro_yaml(tmp_path / "run.yaml", data, tmp_path / "run", steps=40, save_every=100)
    with pytest.raises(SystemExit) as stop:
        main(["train", "--config", str(config), "--num-workers", str(workers)])
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(err) == 1, err
    assert "episode_1.hdf5: reading step 7 failed" in err[0] and "--deep" in err[0], err
    assert "Traceback" not in err[0] and not (tmp_path / "run").exists(), "no half-made run folder"


def test_an_instruction_longer_than_the_context_is_refused_naming_the_episode(tmp_path):
    from trainer_fixtures import write_dataset

    from train.episodes import EpisodeDataError

    data = write_dataset(tmp_path / "data")
    from synthetic_episodes import write_episode

    write_episode(data / "episode_2.hdf5", episode=2, seen=("pick up the cube " * 600,))
    with pytest.raises(EpisodeDataError, match=r"episode_2.hdf5: instruction of \d+ characters is \d+ prompt"):
        _train(micro_config(data, tmp_path / "run"))
    assert not (tmp_path / "run").exists()
