"""``vla gallery`` (fast tests, no browser): robust run-folder reading, the table numbers, escaping, relative
video paths, the two-run page, atomic output and the CLI. The browser test is test_gallery_browser.py."""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from urllib.parse import unquote

import pytest
from gallery_fixtures import episode_record, video_name, write_run

from harness.gallery import build_comparison_gallery, build_gallery
from harness.records import RecordsError
from harness.review_data import RunFolderError, load_run, summarize

NASTY = 'put the <script>alert("x")</script> & the "cube" on <b>top</b>'


def _row_cells(html: str, task: str, css_class: str = "task-row") -> dict[str, str]:
    """data-col -> cell text of the first summary-table row of ``task`` (or the overall row)."""
    pattern = (
        r'<tr class="overall" data-task="">(.*?)</tr>'
        if task == "overall"
        else rf'<tr class="{css_class}" data-task="{re.escape(task)}">(.*?)</tr>'
    )
    match = re.search(pattern, html, re.S)
    assert match, f"no table row for {task!r}"
    return dict(re.findall(r'<td data-col="(\w+)">([^<]*)</td>', match.group(1)))


def _records() -> list[dict]:
    """pick: 8 successes / 10 ok + 1 error + 1 timeout; stack: 1 of 2 (with videos only for stack)."""
    recs = [episode_record("pick", s, "success" if s < 8 else "failure", episode_len=30 + s) for s in range(10)]
    recs += [episode_record("pick", 10, "error"), episode_record("pick", 11, "timeout")]
    recs += [
        episode_record("stack", 0, "success", episode_len=20, video=video_name("stack", 0, "success")),
        episode_record(
            "stack", 1, "failure", episode_len=60, video=video_name("stack", 1, "failure"), instruction=NASTY
        ),
    ]
    return recs


def _touch_videos(run_dir: Path, records: list[dict]) -> None:
    for rec in records:
        if rec["video"]:
            (run_dir / rec["video"]).parent.mkdir(parents=True, exist_ok=True)
            (run_dir / rec["video"]).write_bytes(b"\x00")


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    records = _records()
    out = write_run(tmp_path / "run", records)
    _touch_videos(out, records)
    return out


# ---- reading run folders ---------------------------------------------------------------------------------------


def test_summary_numbers_and_wilson(run_dir: Path) -> None:
    rows, overall = summarize(load_run(run_dir))
    pick = rows[0]
    assert (pick.task, pick.episodes, pick.successes, pick.errors, pick.timeouts) == ("pick", 10, 8, 1, 1)
    assert pick.success_rate == pytest.approx(0.8)
    assert pick.ci95 == pytest.approx((0.4901625, 0.9433178), abs=1e-6)  # Wilson 95 %, 8 of 10
    assert pick.mean_episode_len == pytest.approx(34.5)  # ok episodes only (30..39)
    assert (overall.episodes, overall.successes, overall.errors, overall.timeouts) == (12, 9, 1, 1)
    assert overall.mean_episode_len == pytest.approx((345 + 80) / 12)


def test_truncated_last_line_is_ignored(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    records = [episode_record("pick", s) for s in range(3)]
    partial = json.dumps(episode_record("pick", 3))[:37]  # a SIGKILL mid-write
    with caplog.at_level(logging.WARNING):
        run = load_run(write_run(tmp_path / "r", records, results=False, trailing=partial))
    assert sorted(run.episodes) == [("pick", 0), ("pick", 1), ("pick", 2)]
    assert run.torn_line == 4
    assert "ignoring torn last line 4" in caplog.text


def test_corrupt_middle_line_is_an_error(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path / "r", [episode_record("pick", 0)], results=False)
    with open(run_dir / "episodes.jsonl", "a") as handle:
        handle.write("{not json\n" + json.dumps(episode_record("pick", 1)) + "\n")
    with pytest.raises(RecordsError, match=r"episodes\.jsonl:2: not valid JSON"):
        load_run(run_dir)


def test_duplicate_key_is_an_error_as_for_resume(tmp_path: Path) -> None:
    """One duplicate rule for every reader: the gallery refuses a folder that --resume would refuse."""
    records = [episode_record("pick", 0, "failure"), episode_record("pick", 1), episode_record("pick", 0)]
    with pytest.raises(RecordsError, match=r"episodes\.jsonl:3: .*seed=0\) was already recorded at line 1"):
        load_run(write_run(tmp_path / "r", records, results=False))


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("missing", "does not exist"),
        ("no_file", "has no episodes.jsonl"),
        ("empty", "has no episodes"),
        ("blank_lines", "has no episodes"),
    ],
)
def test_bad_folders_name_the_path(tmp_path: Path, setup: str, message: str) -> None:
    folder = tmp_path / "run folder"
    if setup != "missing":
        folder.mkdir()
    if setup == "empty":
        (folder / "episodes.jsonl").write_text("")
    if setup == "blank_lines":
        (folder / "episodes.jsonl").write_text("\n\n")
    with pytest.raises(RunFolderError, match=message) as exc:
        build_gallery(folder)
    assert str(folder) in str(exc.value)
    assert not (folder / "index.html").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"seed": "3"}, "key 'seed' must be int, got str '3'"),
        ({"seed": True}, "key 'seed' must be int, got bool"),
        ({"status": "crashed"}, "key 'status' must be one of"),
        ({"success_once": None}, "key 'success_once' must be bool, got NoneType"),
        ({"schema_version": 2}, "schema_version 2 is not supported"),
    ],
)
def test_malformed_record_names_file_line_and_key(tmp_path: Path, extra: dict, message: str) -> None:
    records = [episode_record("pick", 0), episode_record("pick", 1, line_extra=extra)]
    with pytest.raises(RecordsError, match=re.escape(message)) as exc:
        load_run(write_run(tmp_path / "r", records, results=False))
    assert "episodes.jsonl:2: " in str(exc.value)


def test_missing_record_key(tmp_path: Path) -> None:
    record = episode_record("pick", 0)
    del record["episode_len"]
    with pytest.raises(RecordsError, match="episodes.jsonl:1: missing key 'episode_len'"):
        load_run(write_run(tmp_path / "r", [record], results=False))


# ---- the single-run page ---------------------------------------------------------------------------------------


def test_page_table_matches_records(run_dir: Path) -> None:
    html = build_gallery(run_dir).read_text()
    assert _row_cells(html, "pick") == {
        "episodes": "10",
        "successes": "8",
        "success_rate": "80.0 %",
        "ci95": "[49.0, 94.3] %",
        "errors": "1",
        "timeouts": "1",
        "mean_episode_len": "34.5",
    }
    assert _row_cells(html, "stack")["success_rate"] == "50.0 %"
    assert _row_cells(html, "overall")["successes"] == "9"
    assert "<title>VLA gallery: scripted (2025-03-04 05:06:07)</title>" in html
    assert "disagrees" not in html and "no results.json" not in html


def test_page_escapes_text(run_dir: Path) -> None:
    html = build_gallery(run_dir).read_text()
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; the &#34;cube&#34; on &lt;b&gt;top&lt;/b&gt;" in html
    assert "<script>alert" not in html and "<b>top</b>" not in html
    assert html.count("<script>") == 1, "only the page's own filter script"


def test_cards_videos_relative_and_placeholders(run_dir: Path) -> None:
    (run_dir / video_name("stack", 1, "failure")).unlink()  # recorded but missing on disk
    html = build_gallery(run_dir).read_text()
    assert html.count('<article class="card') == 14
    assert html.count('<video controls muted preload="metadata"') == 1
    assert '<source src="videos/stack--seed0--success.mp4" type="video/mp4">' in html
    assert "video file missing: videos/stack--seed1--failure.mp4" in html
    assert html.count('<div class="placeholder">no video recorded</div>') == 12
    assert 'data-outcomes="timeout"' in html and 'data-outcomes="error"' in html
    assert "timeout: something broke in pick" in html  # error text shown


def test_page_elsewhere_links_back_relatively(run_dir: Path, tmp_path: Path) -> None:
    page = build_gallery(run_dir, tmp_path / "site" / "deep" / "review page.html")
    html = page.read_text()
    srcs = re.findall(r'<source src="([^"]+)"', html)
    assert srcs and all(not s.startswith(("/", "file:")) for s in srcs)
    for src in srcs:
        assert (page.parent / unquote(src)).resolve().is_file(), src
    assert "../../run/videos/stack--seed0--success.mp4" in srcs


def test_quoting_of_odd_video_names(tmp_path: Path) -> None:
    rec = episode_record("pick", 0, video="videos/pick #1?--seed0--success.mp4")
    run_dir = write_run(tmp_path / "r", [rec])
    _touch_videos(run_dir, [rec])
    html = build_gallery(run_dir).read_text()
    assert '<source src="videos/pick%20%231%3F--seed0--success.mp4"' in html


def test_missing_results_json_builds_table_from_episodes(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path / "r", _records(), results=False)
    html = build_gallery(run_dir).read_text()
    assert _row_cells(html, "pick")["successes"] == "8" and _row_cells(html, "pick")["episodes"] == "10"
    assert "no results.json: the table is computed from episodes.jsonl" in html
    assert "<title>VLA gallery: r (2025-03-09 10:00:00)</title>" in html  # folder name, latest finished_at


def test_stale_results_json_is_flagged(tmp_path: Path) -> None:
    records = _records()
    stale = [r for r in records if r["seed"] != 9]  # written before the last episode
    from gallery_fixtures import results_for

    run_dir = write_run(tmp_path / "r", records, results=results_for(stale))
    html = build_gallery(run_dir).read_text()
    assert "results.json disagrees with episodes.jsonl: task &#39;pick&#39;: results.json episodes = 9" in html
    assert _row_cells(html, "pick")["episodes"] == "10"


def test_atomic_write_leaves_no_temp(run_dir: Path) -> None:
    (run_dir / "index.html").write_text("old page")
    build_gallery(run_dir)
    assert (run_dir / "index.html").read_text().startswith("<!DOCTYPE html>")
    assert not [p for p in os.listdir(run_dir) if p.endswith(".tmp")]


# ---- the two-run page ------------------------------------------------------------------------------------------


def test_comparison_page_pairs_side_by_side(tmp_path: Path) -> None:
    a = [episode_record("pick", s, "success", video=video_name("pick", s, "success")) for s in range(3)]
    b = [
        episode_record("pick", 1, "failure", video=video_name("pick", 1, "failure")),
        episode_record("pick", 2, "success", video=video_name("pick", 2, "success")),
        episode_record("pick", 7, "error"),
    ]
    dir_a, dir_b = write_run(tmp_path / "A", a, policy="alpha"), write_run(tmp_path / "B", b, policy="beta")
    _touch_videos(dir_a, a)
    _touch_videos(dir_b, b)
    page = build_comparison_gallery(dir_a, dir_b)
    assert page == dir_a / "compare.html"
    html = page.read_text()
    assert "alpha" in html and "beta" in html and "<title>VLA compare: A alpha" in html
    pairs = re.findall(
        r'<div class="pair" data-filter-item data-task="pick" data-seed="(\d+)"\s+'
        r'data-outcomes="(\w+) (\w+)" data-discordant="(\d)">',
        html,
    )
    assert pairs == [("1", "success", "failure", "1"), ("2", "success", "success", "0")]
    assert "unpaired: only in run A" in html and "unpaired: only in run B" in html
    assert html.count('class="card outcome-success unpaired"') == 1  # pick seed 0, only in A
    assert html.count('class="card outcome-error unpaired"') == 1  # pick seed 7, only in B
    assert '<source src="../B/videos/pick--seed1--failure.mp4"' in html
    assert '<source src="videos/pick--seed1--success.mp4"' in html
    assert '<td data-col="b">1</td>' in html  # paired McNemar table


def test_cli_gallery_one_and_two_runs(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from scripts.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["gallery", str(run_dir)])
    assert exc.value.code == 0 and (run_dir / "index.html").is_file()
    out = tmp_path / "both.html"
    with pytest.raises(SystemExit) as exc:
        main(["gallery", str(run_dir), str(run_dir), "--out", str(out)])
    assert exc.value.code == 0 and "data-discordant" in out.read_text()
    with pytest.raises(SystemExit) as exc:
        main(["gallery", str(tmp_path / "absent")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "absent' does not exist" in err and err.startswith("error: ") and err.count("\n") == 1
