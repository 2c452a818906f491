"""Task variants of a benchmark: a task with a fixed instruction split and, for grounding tasks, a fixed goal.

A variant is named by a label that stands where a task name stands everywhere in a run (episode keys, results
rows, video names, ``vla compare`` pairs)::

    DualArmLiftBar-v1                      the task, with the run's --instruction-split (a plain run)
    DualArmLiftBar-v1@seen                 the task with its training (seen) phrasings
    DualArmLiftBar-v1@unseen               the task with its held-out (unseen) paraphrases
    DualArmPickColorCube-v1@goal-red       a grounding task with the instructed goal fixed to "red"
    DualArmPickColorCube-v1@unseen@goal-blue

``vla bench --instruction-split both`` runs every task once per split; ``--counterfactual`` runs every seed of a
grounding task (``envs.specs.TaskSpec.goals``) once per goal, so the same layout is seen with each instruction
(scored by :func:`grounding_block`: "did what it was told" = the instructed goal reached, "did the other goal" =
``info["other_goal"]`` at any step). A run with one split and no counterfactual keeps the bare task names, so its
records are the same as before variants existed (and a seen run pairs with an unseen one in ``vla compare``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from envs.specs import get_task

SPLITS = ("seen", "unseen")
GOAL_PREFIX = "goal-"


@dataclasses.dataclass(frozen=True)
class TaskVariant:
    """One row of a run: ``task`` (a name of ``envs.specs.TASKS``), its ``split`` (None: the run's
    ``--instruction-split``) and optional ``goal``."""

    task: str
    split: str | None = None
    goal: str | None = None

    @property
    def label(self) -> str:
        """The variant's name in records (see the module docstring)."""
        parts = [self.task]
        if self.split is not None:
            parts.append(self.split)
        if self.goal is not None:
            parts.append(GOAL_PREFIX + self.goal)
        return "@".join(parts)

    @property
    def reset_options(self) -> dict[str, Any]:
        """Options for ``env.reset``: ``{"goal": goal}`` for a fixed goal, else {}."""
        return {} if self.goal is None else {"goal": self.goal}


def parse_label(label: str) -> TaskVariant:
    """The :class:`TaskVariant` of a label (a bare task name is the seen variant).

    Raises:
        ValueError: an unknown task, a part that is neither a split nor ``goal-NAME``, or a goal the task does
            not have (the message lists the task's goals).
    """
    task, *parts = label.split("@")
    if not parts:  # a bare name: no table lookup (tests and custom env factories may use their own names)
        return TaskVariant(task)
    spec = get_task(task)
    split, goal = None, None
    for part in parts:
        if part in SPLITS:
            split = part
        elif part.startswith(GOAL_PREFIX) and part[len(GOAL_PREFIX) :] in spec.goals:
            goal = part[len(GOAL_PREFIX) :]
        else:
            raise ValueError(
                f"task variant {label!r}: {part!r} is neither a split {list(SPLITS)} nor a goal of {task} "
                f"({[GOAL_PREFIX + g for g in spec.goals] or 'it has none'})"
            )
    return TaskVariant(task, split, goal)


def expand(tasks: Sequence[str], instruction_split: str, counterfactual: bool) -> list[TaskVariant]:
    """The variants of a run: every task x split (``both`` = seen then unseen) x goal (with ``counterfactual``,
    every goal of a grounding task; tasks with one goal run once).

    Raises:
        ValueError: ``counterfactual`` with no grounding task among ``tasks``.
    """
    splits: tuple[str | None, ...] = SPLITS if instruction_split == "both" else (None,)
    if counterfactual and not any(get_task(t).goals for t in tasks):
        raise ValueError(
            f"--counterfactual needs a language-grounding task (one with several goals), got only {list(tasks)}"
        )
    out = []
    for task in tasks:
        goals = get_task(task).goals if counterfactual else ()
        for split in splits:
            out += [TaskVariant(task, split, g) for g in goals] or [TaskVariant(task, split)]
    return out


def _rate(hits: int, n: int) -> dict[str, Any]:
    from harness.metrics import wilson_interval

    lo, hi = wilson_interval(hits, n) if n else (None, None)
    return {"count": hits, "rate": hits / n if n else None, "ci95": [lo, hi]}


def grounding_block(records: Sequence[Any], run_split: str = "seen") -> dict[str, Any]:
    """Counterfactual scores per grounding task and split (``run_split`` for labels without one), over the
    records of goal variants with status ok.

    Returns:
        ``{task: {split: {"episodes", "seeds", "instructed_goal": {count, rate, ci95}, "other_goal": {...},
        "neither": {...}, "both_goals_of_seed": {...}}}}``: ``instructed_goal`` = the instructed goal reached
        (the task's success), ``other_goal`` = another goal reached at some step, ``both_goals_of_seed`` = seeds
        whose every goal variant succeeded (the policy followed each instruction on the same layout). Wilson
        95 % intervals (``harness.metrics.wilson_interval``).
    """
    groups: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
    for r in records:
        v = parse_label(r.task)
        if v.goal is None or r.status != "ok":
            continue
        groups.setdefault((v.task, v.split or run_split), {}).setdefault(r.seed, {})[v.goal] = r
    out: dict[str, Any] = {}
    for (task, split), by_seed in sorted(groups.items()):
        eps = [r for goals in by_seed.values() for r in goals.values()]
        goals = get_task(task).goals
        full = [g for g in by_seed.values() if set(g) == set(goals)]
        told = sum(bool(r.success_once) for r in eps)
        other = sum(bool(r.other_goal) for r in eps)
        neither = sum(not r.success_once and not r.other_goal for r in eps)
        both = sum(all(r.success_once for r in g.values()) for g in full)
        out.setdefault(task, {})[split] = {
            "episodes": len(eps),
            "seeds": len(by_seed),
            "instructed_goal": _rate(told, len(eps)),
            "other_goal": _rate(other, len(eps)),
            "neither": _rate(neither, len(eps)),
            "both_goals_of_seed": _rate(both, len(full)),
        }
    return out


def variant_blocks(records: Sequence[Any], instruction_split: str) -> dict[str, Any]:
    """The results.json blocks of a run with variants: ``per_split`` ({split: {task: rate_block}} and
    ``{split: {"overall": rate_block}}``, runs with --instruction-split both) and ``grounding``
    (:func:`grounding_block`, counterfactual runs); {} for a plain run."""
    from harness.records import rate_block

    out: dict[str, Any] = {}
    variants = [(parse_label(r.task), r) for r in records]
    if instruction_split == "both":
        per_split: dict[str, Any] = {}
        for split in SPLITS:
            rows = [(v, r) for v, r in variants if (v.split or instruction_split) == split]
            tasks = sorted({v.task for v, _ in rows})
            per_split[split] = {
                "per_task": {t: rate_block([r for v, r in rows if v.task == t]) for t in tasks},
                "overall": rate_block([r for _, r in rows]),
            }
        out["per_split"] = per_split
    grounding = grounding_block(records, "seen" if instruction_split == "both" else instruction_split)
    if grounding:
        out["grounding"] = grounding
    return out
