"""``vla sweep SPEC.yaml --out DIR [--resume]``: train and benchmark every variant of a sweep spec
(``scripts.sweep_spec``) one after another, with the same `vla` commands a user would type, then write the report
(``scripts.sweep_report``).

Per variant, in OUT/variants/NAME/: ``recipe.yaml`` (the merged training recipe) -> ``vla train --config
recipe.yaml --data DATA --out run`` -> ``bench.yaml`` -> ``vla bench --config bench.yaml`` (policy
``checkpoint:run/checkpoints/last``, out ``bench``). OUT/sweep.json holds the state: the spec's digest, and per
variant whether training and the benchmark finished and the training wall time (seconds of every attempt; an
attempt cut by a kill is counted up to its last logged step from the run's metrics.jsonl). With ``replicates: N``
each replicate r >= 1 is its own unit NAME.rR (folder OUT/variants/NAME.rR, its own state entry), run after
replicate 0 of the same variant.

``--executor ray``: the variants run at once as Ray tasks (``scripts.sweep_ray``), each its train -> bench ->
gallery commands on a node with ``--cpus-per-variant`` free CPUs; this process stays the only writer of
sweep.json. Nodes must see OUT and the data at the same paths (a shared file system).

Resumable at the step level: ``--resume`` skips finished variants, continues a cut training from its newest
complete checkpoint (``vla train --resume``) and a cut benchmark from its last episode (``vla bench
--resume``). A resumed sweep must have the same spec digest. Child commands die with the sweep (Linux
``PR_SET_PDEATHSIG``), so a killed sweep leaves no training running that would hold the run folder's lock.
OUT is locked for the whole sweep (one sweep per folder).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from common.files import write_json_atomic, write_text_atomic
from scripts.commands import VLA, run_command
from scripts.sweep_spec import SweepConfig, SweepSpec, load_sweep

STATE_FILE = "sweep.json"


def _yaml(path: Path, data: dict[str, Any]) -> None:
    import yaml

    write_text_atomic(path, yaml.safe_dump(data, sort_keys=False))


def trained_step(run_dir: Path) -> int | None:
    """The step of ``run_dir``'s newest checkpoint (``checkpoints/last/config.json``), or None."""
    config = run_dir / "checkpoints" / "last" / "config.json"
    return json.loads(config.read_text())["step"] if config.exists() else None


def _last_logged_time(run_dir: Path) -> float | None:
    metrics = run_dir / "metrics.jsonl"
    if not metrics.exists():
        return None
    times = []
    for line in metrics.read_text().splitlines():
        try:
            times.append(float(json.loads(line)["time"]))
        except (ValueError, KeyError, TypeError):
            continue  # a torn last line of a killed run
    return max(times) if times else None


class Sweep:
    """One sweep in OUT (state in OUT/sweep.json); :meth:`run` runs the variants, then the report."""

    def __init__(self, cfg: SweepConfig, spec: SweepSpec):
        self.cfg, self.spec, self.out = cfg, spec, cfg.out
        self.state_path = self.out / STATE_FILE
        self.state: dict[str, Any] = {}

    # ------------------------------------------------------------------------------------------ state
    def load_state(self) -> None:
        """Start or continue OUT's state. Raises ValueError: OUT holds a sweep and --resume was not given, or it
        holds another spec's sweep."""
        fresh = {"name": self.spec.name, "spec": str(self.spec.path), "digest": self.spec.digest(), "variants": {}}
        if self.state_path.exists():
            old = json.loads(self.state_path.read_text())
            if not self.cfg.resume:
                raise ValueError(f"{self.state_path} already exists: pass --resume to continue that sweep")
            if old.get("digest") != fresh["digest"]:
                raise ValueError(
                    f"--resume: {self.state_path} was written for another spec (digest {old.get('digest', '?')[:12]} "
                    f"vs {fresh['digest'][:12]} of {self.spec.path}): choose a new --out"
                )
            self.state = old
        else:
            self.state = fresh
        for name in self.spec.units:  # "variants" holds units (variant x replicate; the variant itself at N = 1)
            self.state["variants"].setdefault(
                name, {"trained": False, "benched": False, "train_s": 0.0, "bench_s": 0.0, "attempt_started": None}
            )
        self.save()

    def save(self) -> None:
        if not self.cfg.dry_run:
            write_json_atomic(self.state_path, self.state)

    # ------------------------------------------------------------------------------------------ steps
    def record_demos(self) -> None:
        demos = self.spec.demos
        if not demos:
            return
        print(f"== record demos into {self.spec.data}")
        args = [*VLA, "demos", "--out", self.spec.data, *flags(demos)]
        run_command(args + ([] if self.cfg.progress else ["--no-progress"]), self.cfg.dry_run)

    def train(self, name: str) -> None:
        """Train variant ``name`` (or skip it when finished); see the module docstring."""
        cmd = self.train_command(name)
        if cmd is not None:
            self.trained(name, run_command(cmd, self.cfg.dry_run))

    def train_command(self, name: str) -> list[str] | None:
        """The `vla train` command of variant ``name`` (its recipe.yaml written, the attempt's start recorded),
        or None when it is already trained."""
        folder = self.out / "variants" / name
        state = self.state["variants"][name]
        recipe = self.spec.units[name]["train"]
        run_dir = folder / "run"
        steps = int(recipe.get("steps", 0)) or None
        done = trained_step(run_dir)
        if state["trained"] and (steps is None or done == steps):
            print(f"== {name}: trained (step {done}), skipped")
            return
        if state["attempt_started"] is not None:  # the last attempt was killed: count it up to its last log
            last = _last_logged_time(run_dir)
            if last is not None and last > state["attempt_started"]:
                state["train_s"] += last - state["attempt_started"]
        _yaml(folder / "recipe.yaml", recipe) if not self.cfg.dry_run else None
        cmd = [*VLA, "train", "--config", str(folder / "recipe.yaml"), "--data", self.spec.data, "--out", str(run_dir)]
        cmd += ["--resume"] if run_dir.exists() else []
        cmd += [] if self.cfg.progress else ["--no-progress"]
        state["attempt_started"] = time.time()
        self.save()
        print(f"== {name}: train")
        return cmd

    def trained(self, name: str, seconds: float) -> None:
        """Record that variant ``name``'s training finished after ``seconds``."""
        state = self.state["variants"][name]
        run_dir = self.out / "variants" / name / "run"
        state["train_s"] += seconds
        state.update(trained=True, attempt_started=None, step=trained_step(run_dir))
        self.save()

    def bench(self, name: str) -> None:
        """Benchmark variant ``name`` (or skip it when finished), then build its gallery."""
        cmd = self.bench_command(name)
        if cmd is not None:
            self.benched(name, run_command(cmd, self.cfg.dry_run))
            run_command(self.gallery_command(name), self.cfg.dry_run)

    def gallery_command(self, name: str) -> list[str]:
        """`vla gallery` of variant ``name``'s benchmark folder."""
        return [*VLA, "gallery", str(self.out / "variants" / name / "bench")]

    def bench_command(self, name: str) -> list[str] | None:
        """The `vla bench` command of variant ``name`` (bench.yaml written), or None when it is benchmarked."""
        folder = self.out / "variants" / name
        state = self.state["variants"][name]
        out = folder / "bench"
        if state["benched"] and (out / "results.json").exists():
            print(f"== {name}: benchmarked, skipped")
            return None
        flags_ = {
            **self.spec.units[name]["bench"],
            "policy": f"checkpoint:{folder / 'run' / 'checkpoints' / 'last'}",
        }
        flags_.update(out=str(out), resume=(out / "episodes.jsonl").exists(), progress=self.cfg.progress)
        _yaml(folder / "bench.yaml", flags_) if not self.cfg.dry_run else None
        print(f"== {name}: benchmark")
        return [*VLA, "bench", "--config", str(folder / "bench.yaml")]

    def benched(self, name: str, seconds: float) -> None:
        """Record that variant ``name``'s benchmark finished after ``seconds``."""
        state = self.state["variants"][name]
        state["bench_s"] += seconds
        state["benched"] = True
        self.save()

    def run(self) -> int:
        from scripts.sweep_report import write_report

        self.load_state()
        self.record_demos()
        only = set(self.cfg.only)
        chosen = [n for n, u in self.spec.units.items() if not only or n in only or u["variant"] in only]
        if self.cfg.executor == "ray" and not self.cfg.dry_run:
            from scripts.sweep_ray import run_variants_on_ray

            run_variants_on_ray(self, chosen)
        for i, name in enumerate(chosen, 1):  # with Ray: only prints that every variant is done
            print(f"\n=== variant {i}/{len(chosen)}: {name}")
            self.train(name)
            self.bench(name)
        if self.cfg.dry_run:
            return 0
        report = write_report(self.spec, self.state, self.out)
        print(f"\nreport: {self.out / 'report.md'} (gallery: {self.out / 'index.html'})")
        print(report["summary"])
        return 0


def flags(mapping: dict[str, Any]) -> list[str]:
    """``{"episodes": 10, "cameras": ["head"], "progress": False}`` -> ``--episodes 10 --cameras head
    --no-progress`` (the flat flag names of a `vla` command)."""
    out: list[str] = []
    for key, value in mapping.items():
        flag = "--" + key.replace("_", "-")
        if value is None:
            continue
        if isinstance(value, bool):
            out.append(flag if value else f"--no-{key.replace('_', '-')}")
        elif isinstance(value, (list, tuple)):
            out += [flag, *(str(v) for v in value)]
        else:
            out += [flag, str(value)]
    return out


def run_sweep(cfg: SweepConfig) -> int:
    """Body of ``vla sweep``. Raises: ValueError / FileNotFoundError (a bad spec, a resume mismatch),
    RunLockedError (another sweep uses OUT), RuntimeError (a step failed: rerun with --resume)."""
    from common.locks import RunFolder

    spec = load_sweep(cfg.spec)
    if cfg.only:
        unknown = sorted(set(cfg.only) - set(spec.variants) - set(spec.units))
        if unknown:
            raise ValueError(
                f"--only: unknown variants {unknown}; variants of {cfg.spec}: {list(spec.variants)}"
                + (f" (replicate units: {list(spec.units)})" if spec.replicates > 1 else "")
            )
    if cfg.dry_run:
        return Sweep(cfg, spec).run()
    with RunFolder(cfg.out, "vla sweep") as folder:
        folder.keep_partial()  # the state and every variant's folder are meant to survive an interruption
        return Sweep(cfg, spec).run()
