"""``vla sweep --executor ray``: every unfinished variant of a sweep as one Ray task (train -> bench -> gallery).

The driver (:class:`scripts.sweep.Sweep`) builds each variant's commands, records the attempt in sweep.json and
submits one task per variant with ``num_cpus=--cpus-per-variant``; Ray places them on nodes with free CPUs, so
a 2-variant sweep on a 4-CPU machine trains both at once. Tasks run the same `vla` commands as the local path
(in the driver's working directory, children killed with the task), return their wall seconds, and the driver
marks each variant trained / benchmarked as its task finishes (the only writer of sweep.json, so --resume works
as for a local sweep). A failing variant does not stop the others; the sweep then raises naming every failed
variant (rerun with --resume: finished variants are skipped).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from harness.ray_executor import connect, import_ray
from scripts.commands import run_command


def variant_job(commands: Sequence[Sequence[str] | None], cwd: str) -> list[float]:
    """Run the commands of one variant in order in ``cwd`` (None entries are skipped: a step already done);
    returns the wall seconds of each (0.0 for a skipped one). Raises RuntimeError from the first failing one."""
    return [run_command(list(cmd), cwd=cwd) if cmd else 0.0 for cmd in commands]


def _check_cpus(ray: Any, cpus: int) -> None:
    total = int(ray.cluster_resources().get("CPU", 0))
    if cpus > total:
        raise ValueError(f"--cpus-per-variant {cpus}: the Ray cluster has only {total} CPU(s)")


def run_variants_on_ray(sweep: Any, names: Sequence[str]) -> None:
    """Train and benchmark ``names`` of ``sweep`` as concurrent Ray tasks; update its state as each finishes.

    Raises:
        ImportError: Ray is not installed. ValueError: the cluster has fewer CPUs than one variant asks for.
        RuntimeError: one or more variants failed (each named with its error; the others completed).
    """
    ray = import_ray()
    started = connect(ray, sweep.cfg.ray_address)
    try:
        _check_cpus(ray, sweep.cfg.cpus_per_variant)
        job = ray.remote(num_cpus=sweep.cfg.cpus_per_variant, max_retries=0)(variant_job)
        pending: dict[Any, tuple[str, bool, bool]] = {}
        for name in names:
            train, bench = sweep.train_command(name), sweep.bench_command(name)
            if train is None and bench is None:
                continue
            gallery = sweep.gallery_command(name) if bench is not None else None
            ref = job.remote([train, bench, gallery], os.getcwd())
            pending[ref] = (name, train is not None, bench is not None)
        failed = []
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            name, trains, benches = pending.pop(ref)
            try:
                train_s, bench_s, _ = ray.get(ref)
            except Exception as err:  # a RayTaskError wraps the variant's RuntimeError: report it, go on
                failed.append(f"{name}: {str(err).strip().splitlines()[-1]}")
                continue
            if trains:
                sweep.trained(name, train_s)
            if benches:
                sweep.benched(name, bench_s)
            print(f"== {name}: done on Ray (train {train_s:.0f} s, bench {bench_s:.0f} s)", flush=True)
        if failed:
            raise RuntimeError("variants failed on Ray: " + "; ".join(failed) + "; fix and rerun with --resume")
    finally:
        if started:
            ray.shutdown()
