"""``vla bench`` under faults: a disk that fills up while videos or results.json are written, rich markup in
paths and policy specs, and gallery links to files outside the run folder."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest
from gallery_fixtures import episode_record, write_run

from scripts.cli import main

FAKE = ["--env-factory", "fakes:make_fake_env", "--no-progress", "--max-episode-steps", "10"]


def _bench(out: str, *extra: str, policy: str = "random") -> int:
    with pytest.raises(SystemExit) as stop:
        main(["bench", "--policy", policy, "--tasks", "TwoRobotPickCube-v1", "--seeds", "0:3", "--out", out, *FAKE,
              *extra])  # fmt: skip
    return int(stop.value.code)


def test_a_disk_full_during_video_encoding_keeps_the_outcome_and_says_why(tmp_path, monkeypatch):
    """ffmpeg does not fail on ENOSPC, it leaves a file cut short: emulated by cutting the file at close."""
    import imageio.v2

    real = imageio.v2.get_writer

    def full_disk_writer(path, *args, **kwargs):
        writer = real(path, *args, **kwargs)
        close = writer.close

        def cut_at_close():
            close()
            data = Path(path).read_bytes()
            Path(path).write_bytes(data[: len(data) // 3])

        writer.close = cut_at_close
        return writer

    monkeypatch.setattr(imageio.v2, "get_writer", full_disk_writer)
    out = tmp_path / "o"
    with pytest.warns(UserWarning, match="video of TwoRobotPickCube-v1 seed 0 failed"):
        assert _bench(str(out), "--video", "all") == 0
    records = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
    assert len(records) == 3 and all(r["status"] == "ok" for r in records), "the episode outcome stands"
    assert all(r["video"] is None and "decodes to" in r["video_error"] for r in records), records
    assert not list((out / "videos").rglob("*.mp4")) and not (out / "videos/.partial").exists(), "no partial files"
    results = json.loads((out / "results.json").read_text())
    assert results["overall"]["episodes"] == 3


def test_a_disk_full_at_results_json_is_one_line_and_resume_finishes(tmp_path, monkeypatch, capsys):
    import harness.bench

    real = harness.bench.write_json_atomic

    def full(path, *args, **kwargs):
        if Path(path).name == "results.json":
            raise OSError(errno.ENOSPC, f"no space left on device while writing {path}")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(harness.bench, "write_json_atomic", full)
    out = tmp_path / "o"
    assert _bench(str(out), "--video", "none") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"error: no space left on device while writing {out / 'results.json'}", err
    assert len((out / "episodes.jsonl").read_text().splitlines()) == 3, "the finished episodes are kept"
    monkeypatch.setattr(harness.bench, "write_json_atomic", real)
    assert _bench(str(out), "--video", "none", "--resume") == 0
    assert json.loads((out / "results.json").read_text())["overall"]["episodes"] == 3


def test_markup_in_out_and_policy_spec_prints_verbatim(tmp_path, monkeypatch, capsys):

    monkeypatch.chdir(tmp_path)
    assert _bench("res[/x]", "--video", "none") == 0
    text = capsys.readouterr().out
    assert "results: res[/x]/results.json" in text, text
    from harness.summary import print_summary

    results = json.loads((tmp_path / "res[/x]/results.json").read_text())
    results["policy"]["spec"] = "checkpoint:runs/a[lr=1e-4]/last"
    print_summary(results, Path("[bold]out"))
    text = capsys.readouterr().out
    assert "checkpoint:runs/a[lr=1e-4]/last" in text and "results: [bold]out/results.json" in text, text


def test_gallery_does_not_link_videos_outside_the_run(tmp_path):
    from harness.gallery import build_gallery

    outside = tmp_path / "secret.mp4"
    outside.write_bytes(b"\x00")
    records = [
        episode_record("pick", 0, "success", video=str(outside)),
        episode_record("pick", 1, "success", video="../secret.mp4"),
    ]
    run = write_run(tmp_path / "run", records)
    html = build_gallery(run).read_text()
    assert 'secret.mp4"' not in html and 'src="../secret.mp4' not in html
    assert html.count("video outside the run folder, not linked") == 2, html
