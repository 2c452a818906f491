"""``vla compare``: pairing on (task, seed), error exclusion, unpaired keys, exact McNemar p-values, JSON/CLI."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from gallery_fixtures import episode_record, write_run
from rich.console import Console

from harness.compare import compare_runs, comparison_to_dict, paired_stats, run_compare
from harness.review_config import CompareConfig
from harness.review_data import RunFolderError, load_run


@pytest.mark.parametrize(
    ("b", "c", "expected"),
    [
        (0, 5, 0.0625),  # 2 * (1/2)^5
        (5, 0, 0.0625),  # symmetric
        (1, 8, 0.0390625),  # 2 * (1 + 9) / 512
        (2, 7, 0.1796875),  # 2 * (1 + 9 + 36) / 512
        (0, 10, 0.001953125),  # 2 / 1024
        (0, 1, 1.0),  # 2 * 1/2, capped at 1
        (3, 3, 1.0),
        (10, 10, 1.0),
        (4, 5, 1.0),
        (0, 0, 1.0),  # no discordant pair
    ],
)
def test_mcnemar_p_values_known(b: int, c: int, expected: float) -> None:
    # Concordant pairs (both succeed / both fail) must not change the test.
    pairs = [(True, False)] * b + [(False, True)] * c + [(True, True)] * 4 + [(False, False)] * 2
    stats = paired_stats("t", pairs)
    assert (stats.b, stats.c) == (b, c)
    assert stats.p_value == pytest.approx(expected, rel=1e-12, abs=1e-15), f"b={b}, c={c}"


def test_mcnemar_large_counts_stay_finite_and_ordered() -> None:
    p_balanced = paired_stats("t", [(True, False)] * 300 + [(False, True)] * 300).p_value
    p_skewed = paired_stats("t", [(True, False)] * 260 + [(False, True)] * 340).p_value
    assert p_balanced == 1.0
    assert 0.0 < p_skewed < 0.01


def _two_runs(tmp_path: Path) -> tuple[Path, Path]:
    """A/B runs: pick seeds 0-5 vs 1-6 (paired 1-5), stack 0-3 in both with an error and a timeout."""
    a = [
        episode_record("pick", 0, "success"),  # only in A
        episode_record("pick", 1, "success"),
        episode_record("pick", 2, "success"),  # b
        episode_record("pick", 3, "failure"),  # c
        episode_record("pick", 4, "success"),
        episode_record("pick", 5, "failure"),  # concordant
        episode_record("stack", 0, "error"),
        episode_record("stack", 1, "failure"),
        episode_record("stack", 2, "success"),
        episode_record("stack", 3, "failure"),
    ]
    b = [
        episode_record("pick", 1, "failure"),
        episode_record("pick", 2, "failure"),
        episode_record("pick", 3, "success"),
        episode_record("pick", 4, "success"),
        episode_record("pick", 5, "failure"),
        episode_record("pick", 6, "success"),  # only in B
        episode_record("stack", 0, "success"),  # excluded: A error
        episode_record("stack", 1, "timeout"),  # excluded: B timeout
        episode_record("stack", 2, "success"),
        episode_record("stack", 3, "success"),
    ]  # c
    return (write_run(tmp_path / "A", a, policy="alpha"), write_run(tmp_path / "B", b, policy="beta"))


def test_pairing_per_task_and_overall(tmp_path: Path) -> None:
    dir_a, dir_b = _two_runs(tmp_path)
    comp = compare_runs(load_run(dir_a), load_run(dir_b))
    pick, stack = comp.per_task
    assert (pick.task, pick.n_pairs, pick.b, pick.c) == ("pick", 5, 2, 1)
    assert pick.success_rate_a == pytest.approx(3 / 5) and pick.success_rate_b == pytest.approx(2 / 5)
    assert pick.difference == pytest.approx(-1 / 5)
    assert pick.p_value == pytest.approx(1.0)  # b=2, c=1: 2 * (1 + 3) / 8 -> capped
    assert (stack.task, stack.n_pairs, stack.b, stack.c) == ("stack", 2, 0, 1)
    assert stack.success_rate_a == pytest.approx(1 / 2) and stack.success_rate_b == pytest.approx(1.0)
    overall = comp.overall
    assert (overall.n_pairs, overall.b, overall.c) == (7, 2, 2)
    assert overall.success_rate_a == pytest.approx(4 / 7) and overall.success_rate_b == pytest.approx(4 / 7)
    assert overall.difference == pytest.approx(0.0) and overall.p_value == 1.0


def test_unpaired_keys_and_errors_excluded(tmp_path: Path) -> None:
    dir_a, dir_b = _two_runs(tmp_path)
    comp = compare_runs(load_run(dir_a), load_run(dir_b))
    assert comp.only_in_a == [("pick", 0)]
    assert comp.only_in_b == [("pick", 6)]
    # An error/timeout in either run removes the key from the pairs; it is not counted as a failure.
    assert comp.excluded == [(("stack", 0), "error", "ok"), (("stack", 1), "ok", "timeout")]
    data = comparison_to_dict(comp)
    assert data["only_in_a"] == [{"task": "pick", "seed": 0}]
    assert data["excluded"][0] == {"task": "stack", "seed": 0, "status_a": "error", "status_b": "ok"}
    assert data["run_a"]["policy"] == "alpha" and data["run_b"]["policy"] == "beta"


def test_metric_success_at_end(tmp_path: Path) -> None:
    # B succeeds once in every episode but holds the success at the end only in one of three.
    a = [episode_record("lift", s, "success") for s in range(3)]
    b = [episode_record("lift", s, "success", success_at_end=(s == 0)) for s in range(3)]
    run_a, run_b = load_run(write_run(tmp_path / "A", a)), load_run(write_run(tmp_path / "B", b))
    once = compare_runs(run_a, run_b, "success_once").overall
    at_end = compare_runs(run_a, run_b, "success_at_end").overall
    assert (once.b, once.c, once.difference) == (0, 0, 0.0)
    assert (at_end.b, at_end.c) == (2, 0) and at_end.difference == pytest.approx(-2 / 3)
    with pytest.raises(ValueError, match="metric"):
        compare_runs(run_a, run_b, "success_sometimes")


def test_no_shared_key_is_an_error(tmp_path: Path) -> None:
    run_a = load_run(write_run(tmp_path / "A", [episode_record("pick", 0)]))
    run_b = load_run(write_run(tmp_path / "B", [episode_record("pick", 1)]))
    with pytest.raises(RunFolderError, match="share no"):
        compare_runs(run_a, run_b)


def test_run_compare_prints_table_and_writes_json(tmp_path: Path) -> None:
    dir_a, dir_b = _two_runs(tmp_path)
    out_json = tmp_path / "reports" / "cmp.json"
    buffer = io.StringIO()
    code = run_compare(CompareConfig(dir_a, dir_b, json_path=out_json), Console(file=buffer, width=200))
    assert code == 0
    text = buffer.getvalue()
    for expected in (
        "pick",
        "stack",
        "overall",
        "McNemar",
        "B-A pp",
        "only in A: 1",
        "only in B: 1",
        "excluded (error/timeout in either run): 2",
        "-20.0",
    ):
        assert expected in text, f"{expected!r} missing from:\n{text}"
    data = json.loads(out_json.read_text())
    assert data["metric"] == "success_once"
    assert data["per_task"]["pick"] == {
        "n_pairs": 5,
        "success_rate_a": 0.6,
        "success_rate_b": 0.4,
        "difference": pytest.approx(-0.2),
        "b": 2,
        "c": 1,
        "p_value": 1.0,
    }
    assert data["overall"]["n_pairs"] == 7
    assert not list(out_json.parent.glob(".*.tmp")), "temp file left behind"


def test_run_compare_missing_folder(tmp_path: Path) -> None:
    dir_a, _ = _two_runs(tmp_path)
    missing = tmp_path / "nope"
    with pytest.raises(RunFolderError, match="nope' does not exist"):
        run_compare(CompareConfig(dir_a, missing), Console(file=io.StringIO()))


def test_cli_compare(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from scripts.cli import main

    dir_a, dir_b = _two_runs(tmp_path)
    out_json = tmp_path / "cmp.json"
    with pytest.raises(SystemExit) as exc:
        main(["compare", str(dir_a), str(dir_b), "--json", str(out_json), "--metric", "success_at_end"])
    assert exc.value.code == 0, capsys.readouterr()
    assert json.loads(out_json.read_text())["metric"] == "success_at_end"
