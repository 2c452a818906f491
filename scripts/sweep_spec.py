"""Sweep specs (``vla sweep SPEC.yaml``): a base training recipe plus named variants, each trained and benchmarked
on the same seeds. Light on purpose (yaml only) so ``vla --help`` stays fast.

Spec keys (``benchmarks/sweeps/*.yaml`` are examples)::

    name: action-head                    # the sweep's name (report title)
    question: "L1, tokens or flow?"      # the design question it answers (report)
    recipe: ../recipes/tiny-liftbar.yaml # a `vla train --config` YAML; relative paths: to this spec's folder
    data: data/DualArmLiftBar-v1         # the episode folder every variant trains on (relative: to the cwd)
    demos: {task: ..., episodes: 100, ...}  # optional: `vla demos` flags; records (or completes) `data` first
    train: {steps: 1500}                 # recipe overrides for every variant (flat `vla train` flag names)
    bench: {tasks: [...], seeds: "100000:100030", workers: 2, video: failures}   # `vla bench` flags
    baseline: l1                         # the variant the others are tested against (paired McNemar)
    replicates: 1                        # optional: training seeds per variant (default 1); see below
    variants:                            # name -> {train: {...}, bench: {...}} overrides of the above
      l1: {}
      flow: {train: {action_head: flow}}

``model_overrides`` dicts merge key by key (base recipe, then ``train``, then the variant's). Variant names are
folder names: letters, digits, ``-`` and ``_``.

``replicates: N`` trains every variant N times: replicate 0 is the unit ``NAME`` (the recipe as written),
replicate r >= 1 the unit ``NAME.rR`` with the recipe's ``seed`` + r (model init, sample order, train/val split,
instruction choice). All units benchmark on the same seeds; the report pools them per variant and pairs variant
and baseline replicate by replicate (``scripts.sweep_report``). The digest covers the variants, not N: raise N
in a finished sweep's spec and rerun it with ``--resume`` to train only the new replicates.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import tyro

TOP_KEYS = {"name", "question", "recipe", "data", "demos", "train", "bench", "baseline", "variants", "replicates"}
VARIANT_KEYS = {"train", "bench"}
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
MERGED_DICTS = ("model_overrides",)
DEFAULT_TRAIN_SEED = 0
"""``TrainConfig.seed``'s default (train/train_config.py; tests/scripts/test_sweep.py checks they agree): the seed
replicate r >= 1 adds r to when the recipe sets none."""


def unit_name(variant: str, replicate: int) -> str:
    """The folder / state name of one training run: ``NAME`` for replicate 0, ``NAME.rR`` after it (``.`` is not
    allowed in variant names, so units never collide)."""
    return variant if replicate == 0 else f"{variant}.r{replicate}"


def _units(variants: dict[str, dict[str, dict[str, Any]]], replicates: int) -> dict[str, dict[str, Any]]:
    units = {}
    for name, v in variants.items():
        for r in range(replicates):
            train = dict(v["train"])
            if r:
                train["seed"] = int(train.get("seed", DEFAULT_TRAIN_SEED)) + r
            units[unit_name(name, r)] = {"variant": name, "replicate": r, "train": train, "bench": v["bench"]}
    return units


@dataclasses.dataclass(frozen=True)
class SweepSpec:
    """A parsed sweep spec (see the module docstring). ``variants`` maps each name to its merged ``train``
    (recipe) and ``bench`` dicts, in spec order; ``units`` maps each training run (``unit_name``: variant x
    replicate) to ``{"variant", "replicate", "train", "bench"}``, variant by variant."""

    path: Path
    name: str
    question: str
    data: str
    demos: dict[str, Any] | None
    baseline: str
    variants: dict[str, dict[str, dict[str, Any]]]
    replicates: int = 1
    units: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)

    def digest(self) -> str:
        """SHA-256 of what decides the results (data, demos, every variant's recipe and bench flags)."""
        payload = {"data": self.data, "demos": self.demos, "variants": self.variants}
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if key in MERGED_DICTS and isinstance(value, dict):
            out[key] = {**(out.get(key) or {}), **value}
        else:
            out[key] = copy.deepcopy(value)
    return out


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(value).__name__}")
    return value


def load_sweep(path: str | Path) -> SweepSpec:
    """Read and check a sweep spec.

    Raises:
        FileNotFoundError: the spec or its recipe is missing.
        ValueError: unknown keys, a bad variant name, a missing baseline, or fewer than two variants (each
            message names the file and the key).
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"sweep spec {path} not found")
    raw = _mapping(yaml.safe_load(path.read_text()), str(path))
    unknown = sorted(set(raw) - TOP_KEYS)
    if unknown:
        raise ValueError(f"{path}: unknown keys {unknown}; known: {sorted(TOP_KEYS)}")
    for key in ("name", "recipe", "data", "bench", "baseline", "variants"):
        if key not in raw:
            raise ValueError(f"{path}: missing key {key!r}")
    recipe_path = Path(raw["recipe"])
    recipe_path = recipe_path if recipe_path.is_absolute() else path.parent / recipe_path
    if not recipe_path.is_file():
        raise FileNotFoundError(f"{path}: recipe {recipe_path} not found")
    recipe = _mapping(yaml.safe_load(recipe_path.read_text()), str(recipe_path))
    train = _merge(recipe, _mapping(raw.get("train"), f"{path}: train"))
    bench = _mapping(raw["bench"], f"{path}: bench")
    variants_raw = _mapping(raw["variants"], f"{path}: variants")
    if len(variants_raw) < 2:
        raise ValueError(f"{path}: variants: a sweep compares at least 2 variants, got {len(variants_raw)}")
    variants = {}
    for name, over in variants_raw.items():
        over = _mapping(over, f"{path}: variants.{name}")
        if not NAME.match(str(name)):
            raise ValueError(f"{path}: variants.{name}: names are folder names (letters, digits, - and _)")
        bad = sorted(set(over) - VARIANT_KEYS)
        if bad:
            raise ValueError(f"{path}: variants.{name}: unknown keys {bad}; known: {sorted(VARIANT_KEYS)}")
        variants[str(name)] = {
            "train": _merge(train, _mapping(over.get("train"), f"{path}: variants.{name}.train")),
            "bench": _merge(bench, _mapping(over.get("bench"), f"{path}: variants.{name}.bench")),
        }
    if raw["baseline"] not in variants:
        raise ValueError(f"{path}: baseline {raw['baseline']!r} is not a variant; variants: {list(variants)}")
    replicates = raw.get("replicates", 1)
    if isinstance(replicates, bool) or not isinstance(replicates, int) or replicates < 1:
        raise ValueError(f"{path}: replicates: expected an integer >= 1, got {replicates!r}")
    demos = raw.get("demos")
    return SweepSpec(
        path=path,
        name=str(raw["name"]),
        question=str(raw.get("question", "")),
        data=str(raw["data"]),
        demos=_mapping(demos, f"{path}: demos") if demos is not None else None,
        baseline=str(raw["baseline"]),
        variants=variants,
        replicates=replicates,
        units=_units(variants, replicates),
    )


@dataclasses.dataclass
class SweepConfig:
    """Train and benchmark every variant of a sweep spec on the same seeds; write OUT/report.json, report.md,
    success.svg and index.html (the combined gallery)."""

    spec: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="SPEC")]
    """Sweep spec YAML (benchmarks/sweeps/*.yaml)."""
    out: Path
    """Output folder: OUT/variants/NAME/{recipe.yaml, run/, bench/}, OUT/sweep.json (state) and the report."""
    resume: bool = False
    """Continue an interrupted sweep in OUT: finished variants are skipped, a cut training or benchmark resumes."""
    only: tuple[str, ...] = ()
    """Run only these variants (all their replicates) or replicate units NAME.rR (the report covers every unit
    that has finished)."""
    dry_run: bool = False
    """Print the commands of every step and exit."""
    progress: bool = True
    """Show the progress bars of `vla train` and `vla bench`."""
    executor: Literal["local", "ray"] = "local"
    """Where variants run: local (one after another) or ray (at once, one Ray task per variant; shared file system)."""
    ray_address: str | None = None
    """With --executor ray: auto or HOST:PORT joins a running cluster (default: start Ray on this machine)."""
    cpus_per_variant: int = 2
    """With --executor ray: CPUs reserved per variant (match the recipe's threads + data workers)."""

    def __post_init__(self) -> None:
        self.spec, self.out = Path(self.spec), Path(self.out)
        if self.cpus_per_variant < 1:
            raise ValueError(f"cpus_per_variant must be >= 1, got {self.cpus_per_variant}")
        if self.executor != "ray" and self.ray_address is not None:
            raise ValueError("--ray-address needs --executor ray")
        if self.out.exists() and not self.out.is_dir():
            raise ValueError(f"out: {self.out} exists and is not a folder")
