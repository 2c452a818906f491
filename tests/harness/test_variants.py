"""Task variants: --instruction-split both (per-split rows) and --counterfactual (each goal of a grounding task on
the same seed), scored "did as told" vs "did the other goal"; `vla compare` pairs the variants of two runs."""

from __future__ import annotations

import functools

import pytest
from bench_fixtures import fake_config, load_run
from fakes import make_goal_policy, make_grounding_fake_env, make_red_policy

from harness.bench import run_bench
from harness.compare import compare_runs
from harness.review_data import load_run as load_compare_run
from harness.variants import TaskVariant, expand, parse_label

PICK = "DualArmPickColorCube-v1"
LIFT = "DualArmLiftBar-v1"


def test_labels_round_trip_and_bad_parts_are_named() -> None:
    for v in (TaskVariant(LIFT), TaskVariant(LIFT, "unseen"), TaskVariant(PICK, "seen", "blue")):
        assert parse_label(v.label) == v
    assert TaskVariant(PICK, None, "red").label == f"{PICK}@goal-red"
    assert TaskVariant(PICK, None, "red").reset_options == {"goal": "red"}
    with pytest.raises(ValueError, match="goal-green"):
        parse_label(f"{LIFT}@goal-green")  # LiftBar has no goals
    with pytest.raises(ValueError, match=r"\['goal-red', 'goal-blue'\]"):
        parse_label(f"{PICK}@goal-green")


def test_expand() -> None:
    assert [v.label for v in expand([LIFT], "seen", False)] == [LIFT]
    assert [v.label for v in expand([LIFT, PICK], "both", True)] == [
        f"{LIFT}@seen",
        f"{LIFT}@unseen",
        f"{PICK}@seen@goal-red",
        f"{PICK}@seen@goal-blue",
        f"{PICK}@unseen@goal-red",
        f"{PICK}@unseen@goal-blue",
    ]
    with pytest.raises(ValueError, match="grounding task"):
        expand([LIFT], "seen", True)


def _run(out, policy=make_goal_policy, **kw):
    cfg = fake_config(out, tasks=(LIFT, PICK), seeds="0:4", **kw)
    code = run_bench(cfg, env_factory=make_grounding_fake_env, policy_factory=functools.partial(policy))
    return code, *load_run(out)


def test_both_splits_and_counterfactual_goals_run_every_seed(tmp_path) -> None:
    code, records, results = _run(tmp_path / "told", instruction_split="both", counterfactual=True)
    assert code == 0 and len(records) == 6 * 4
    by_label = {(r["task"], r["seed"]): r for r in records}
    red = by_label[(f"{PICK}@unseen@goal-red", 1)]  # seed 1 draws blue; the variant fixes red
    assert red["instruction"] == "lift the red cube (unseen)" and red["success_once"] and not red["other_goal"]
    assert by_label[(f"{LIFT}@seen", 0)]["other_goal"] is None  # not a grounding task
    assert set(results["per_split"]) == {"seen", "unseen"}
    assert results["per_split"]["unseen"]["per_task"][PICK]["episodes"] == 8
    g = results["grounding"][PICK]["seen"]
    assert g["seeds"] == 4 and g["episodes"] == 8
    assert g["instructed_goal"]["rate"] == 1.0 and g["other_goal"]["rate"] == 0.0
    assert g["both_goals_of_seed"]["rate"] == 1.0


def test_an_instruction_blind_policy_does_the_other_goal_half_the_time(tmp_path) -> None:
    _, _, told = _run(tmp_path / "told", counterfactual=True)
    _, records, blind = _run(tmp_path / "blind", policy=make_red_policy, counterfactual=True)
    g = blind["grounding"][PICK]["seen"]
    assert g["instructed_goal"]["rate"] == 0.5 and g["other_goal"]["rate"] == 0.5
    assert g["both_goals_of_seed"]["rate"] == 0.0  # never follows both instructions of one layout
    assert {r["task"] for r in records if r["success_once"] is False and PICK in r["task"]} == {f"{PICK}@goal-blue"}
    comp = compare_runs(load_compare_run(tmp_path / "told"), load_compare_run(tmp_path / "blind"))
    pick = [s for s in comp.per_task if s.task == f"{PICK}@goal-blue"][0]
    assert pick.n_pairs == 4 and pick.success_rate_a == 1.0 and pick.success_rate_b == 0.0


def test_plain_runs_keep_bare_task_names_and_resume_checks_the_variant_settings(tmp_path) -> None:
    _, records, results = _run(tmp_path / "plain", instruction_split="unseen")
    assert {r["task"] for r in records} == {LIFT, PICK}
    assert "per_split" not in results and "grounding" not in results
    assert all(r["instruction"].endswith("(unseen)") for r in records if r["task"] == PICK)
    with pytest.raises(ValueError, match="counterfactual: was False, now True"):
        _run(tmp_path / "plain", instruction_split="unseen", counterfactual=True, resume=True)


def test_gallery_cards_name_the_variant_and_flag_the_other_goal(tmp_path) -> None:
    from harness.gallery import build_gallery

    _run(tmp_path / "blind", policy=make_red_policy, counterfactual=True)
    page = build_gallery(tmp_path / "blind").read_text()
    cards = page.split("<article")[1:]
    blue = [c for c in cards if f'data-task="{PICK}@goal-blue"' in c]
    red = [c for c in cards if f'data-task="{PICK}@goal-red"' in c]
    assert len(blue) == len(red) == 4
    assert all("did the other goal" in c and "lift the blue cube" in c for c in blue)
    assert not any("did the other goal" in c for c in red)
