"""Body of ``vla bench``: resolve the benchmark, check the policy against every task BEFORE the first episode, run
(or resume) the episodes, and write OUT/results.json.

Files in OUT: ``episodes.jsonl`` and ``results.json`` (schema in ``harness.records``), ``videos/``, and
``run_config.json`` (the settings that decide outcomes; a resumed run must match them).
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import importlib
import json
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common.files import write_json_atomic
from common.locks import RunFolder
from envs.specs import get_task
from harness.benchmark_specs import load_benchmark, parse_seeds
from harness.config import BenchConfig
from harness.dispatch import plan_items, run_items
from harness.ray_executor import RayOptions
from harness.records import (
    EPISODES_FILE,
    RESULTS_FILE,
    SCHEMA_VERSION,
    EpisodeRecord,
    RecordSink,
    aggregate,
    read_records,
    repair_tail,
    rewrite_records,
)
from harness.rollout import RunSettings
from harness.variants import expand, parse_label, variant_blocks
from policies.base import EnvMetadata, check_compatible, make_policy

RUN_CONFIG_FILE = "run_config.json"
_OUTCOME_FIELDS = (
    "policy",
    "max_episode_steps",
    "image_size",
    "end_on_success",
    "post_success_steps",
    "n_action_steps",
    "temporal_ensemble_coeff",
    "instruction_split",
    "counterfactual",
    "num_envs",
    "sim_backend",
    "visual_quality",
)
"""Settings a resumed run must share with the run it continues (tasks, seeds, workers and videos may change)."""
_WEIGHTS_FIELD = "policy_sha256"
"""The policy's weights digest (``PolicyMetadata.weights_digest``, checkpoint policies): a resumed run must use
the same weights even when the --policy string is unchanged (``checkpoint:RUN/checkpoints/last`` after more
training, a re-trained run at the same path). Checked when the earlier run recorded one."""


@dataclasses.dataclass(frozen=True)
class ResolvedRun:
    """A BenchConfig with the benchmark spec and the policy's metadata applied."""

    seeds: dict[str, list[int]]
    settings: RunSettings
    outcome_config: dict[str, Any]


def _load_factory(spec: str) -> Callable[..., Any]:
    module, _, name = spec.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"env_factory: cannot load {spec!r}: {err}") from err


def resolve(
    cfg: BenchConfig, meta: Any, env_factory: Callable[..., Any] | None, policy_factory: Callable[[], Any]
) -> ResolvedRun:
    """Tasks, seeds, horizons, cameras and image size of the run (CLI > policy metadata > benchmark spec)."""
    spec = None
    if cfg.benchmark is not None:
        spec = load_benchmark(cfg.benchmark)
        tasks, seeds = spec.tasks, list(spec.seeds)
        steps = dict(spec.max_episode_steps)
    else:
        tasks, seeds = cfg.tasks, parse_seeds(cfg.seeds)
        steps = {t: get_task(t).max_episode_steps for t in tasks}
    if cfg.max_episode_steps is not None:
        steps = {t: cfg.max_episode_steps for t in tasks}
    variants = expand(tasks, cfg.instruction_split, cfg.counterfactual)
    labels = [v.label for v in variants]
    steps = {v.label: steps[v.task] for v in variants}
    video_cams: tuple[str, ...] = ()
    if cfg.video != "none":
        video_cams = cfg.video_cameras or tuple(meta.cameras) or (spec.video_cameras if spec else ()) or ("head",)
    cameras = tuple(meta.cameras) + tuple(c for c in video_cams if c not in meta.cameras)
    image_size = cfg.image_size or (meta.image_size if meta.cameras and meta.image_size else None)
    image_size = image_size or (spec.image_size if spec else 128)
    if env_factory is None:
        if cfg.env_factory is not None:
            env_factory = _load_factory(cfg.env_factory)
        else:
            from envs.wrapper import make_env as env_factory
    settings = RunSettings(
        policy_factory=policy_factory,
        env_factory=env_factory,
        out=cfg.out,
        max_episode_steps=steps,
        cameras=cameras,
        policy_cameras=tuple(meta.cameras),
        video_cameras=video_cams,
        image_size=int(image_size),
        video=cfg.video,
        video_stride=cfg.video_stride,
        end_on_success=cfg.end_on_success,
        post_success_steps=cfg.post_success_steps,
        n_action_steps=cfg.n_action_steps,
        temporal_ensemble_coeff=cfg.temporal_ensemble_coeff,
        instruction_split=cfg.instruction_split,
        num_envs=cfg.num_envs,
        sim_backend=cfg.sim_backend,
        render_backend=cfg.render_backend,
        visual_quality=cfg.visual_quality,
        episode_timeout=cfg.episode_timeout,
    )
    outcome = {
        "policy": cfg.policy,
        "max_episode_steps": steps,
        "cameras": list(cameras),
        "image_size": int(image_size),
        "end_on_success": cfg.end_on_success,
        "post_success_steps": cfg.post_success_steps,
        "n_action_steps": cfg.n_action_steps,
        "temporal_ensemble_coeff": cfg.temporal_ensemble_coeff,
        "instruction_split": cfg.instruction_split,
        "counterfactual": cfg.counterfactual,
        "num_envs": cfg.num_envs,
        "sim_backend": cfg.sim_backend,
        "visual_quality": cfg.visual_quality,
        "video": cfg.video,
        "video_stride": cfg.video_stride,
        "video_cameras": list(video_cams),
        "tasks": list(tasks),
        "variants": labels,
        "seeds": seeds,
        _WEIGHTS_FIELD: meta.weights_digest,
    }
    return ResolvedRun({label: list(seeds) for label in labels}, settings, outcome)


def check_before_run(meta: Any, run: ResolvedRun, local: bool = True) -> None:
    """Raise ``PolicyMismatchError`` when the policy does not fit any task of the run (before any episode), or
    ValueError when ``num_envs > 1`` is asked for ManiSkill without CUDA on this machine (``local``: episodes run
    here; Ray actors check on their own nodes). Warns when the policy was trained on
    frames of another visual quality (a domain shift: low-poly vs stock arm meshes)."""
    trained = list(meta.trained_visual_quality)
    if trained and run.settings.visual_quality not in trained:
        warnings.warn(
            f"{meta.name} was trained on frames rendered with visual_quality {trained}, but this run renders "
            f"{run.settings.visual_quality!r}: expect lower success (pass --visual-quality {trained[0]})",
            stacklevel=2,
        )
    for task in dict.fromkeys(parse_label(label).task for label in run.seeds):
        check_compatible(meta, EnvMetadata(task=task, cameras=run.settings.cameras, image_size=run.settings.image_size))
    if local and run.settings.num_envs > 1 and getattr(run.settings.env_factory, "__module__", "") == "envs.wrapper":
        import torch

        if not torch.cuda.is_available():
            raise ValueError(
                f"num_envs={run.settings.num_envs} needs ManiSkill's GPU simulator, but no CUDA device "
                f"is available; use --workers for CPU parallelism"
            )


def prepare_out(cfg: BenchConfig, run: ResolvedRun) -> list[EpisodeRecord]:
    """Create OUT, check a resumed run's settings, and return the records already there (after --retry-errors).

    Raises:
        ValueError: OUT already holds episodes and --resume was not given, or the run being resumed used other
            outcome settings or other policy weights (each difference is named with its old and new value).
    """
    out = cfg.out
    out.mkdir(parents=True, exist_ok=True)
    episodes = out / EPISODES_FILE
    previous = out / RUN_CONFIG_FILE
    if episodes.exists() and not cfg.resume:
        raise ValueError(f"{episodes} already exists: pass --resume to continue that run, or choose a new --out")
    if cfg.resume and previous.exists():
        old = json.loads(previous.read_text())
        diff = [k for k in _OUTCOME_FIELDS if old.get(k) != run.outcome_config.get(k)]
        if "policy" in diff and _same_weights(old, run.outcome_config):
            diff.remove("policy")
        if old.get(_WEIGHTS_FIELD) and old[_WEIGHTS_FIELD] != run.outcome_config.get(_WEIGHTS_FIELD):
            diff.append(_WEIGHTS_FIELD)
        if diff:
            details = "; ".join(f"{k}: was {old.get(k)!r}, now {run.outcome_config.get(k)!r}" for k in diff)
            raise ValueError(f"--resume: {previous} was written with other settings ({details})")
    if cfg.resume and repair_tail(episodes):
        print(f"note: cut a partial last line from {episodes} (that episode will run again)", file=sys.stderr)
    records = read_records(episodes).records
    if cfg.retry_errors:
        kept = [r for r in records if r.status == "ok"]
        if len(kept) != len(records):
            rewrite_records(episodes, kept)
        records = kept
    write_json_atomic(previous, run.outcome_config)
    return records


def _same_weights(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Two ``checkpoint:`` specs that name the same weights (equal digests) with the same options (``?dtype=``):
    e.g. ``RUN/checkpoints/last`` then ``RUN/checkpoints/step_N`` after more training moved ``last``."""
    a, b = str(old.get("policy", "")), str(new.get("policy", ""))
    digest = old.get(_WEIGHTS_FIELD)
    return (
        a.startswith("checkpoint:")
        and b.startswith("checkpoint:")
        and a.partition("?")[2] == b.partition("?")[2]
        and digest is not None
        and digest == new.get(_WEIGHTS_FIELD)
    )


def _progress(cfg: BenchConfig, total: int, initial: int):
    if not cfg.progress:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="ep", desc="vla bench", file=sys.stderr)


def _execute(cfg: BenchConfig, run: ResolvedRun, policy: Any, done: set) -> tuple[list[EpisodeRecord], float, int]:
    sink = RecordSink(cfg.out / EPISODES_FILE, existing=done)
    items = plan_items(run.seeds, run.settings.num_envs, done=done)
    total = sum(len(s) for s in run.seeds.values())
    bar = _progress(cfg, total, total - sum(len(s) for _, s in items))

    def write(record: EpisodeRecord) -> None:
        if sink.write(record) and bar is not None:
            bar.update(1)
            bar.set_postfix_str(f"{record.task} seed {record.seed}: {record.status}")

    ray = None
    if cfg.executor == "ray":
        ray = RayOptions(actors=cfg.workers, address=cfg.ray_address, num_gpus=cfg.ray_num_gpus)
    start = time.perf_counter()
    try:
        used = run_items(run.settings, items, write, workers=cfg.workers, policy=policy, ray=ray)
    finally:
        if bar is not None:
            bar.close()
    return sink.new_records, time.perf_counter() - start, used


def _throughput(new: list[EpisodeRecord], wall: float, workers: int, cfg: BenchConfig) -> dict[str, Any]:
    if not new:
        old = cfg.out / RESULTS_FILE
        if old.exists():
            return json.loads(old.read_text()).get("throughput", {})
    return {
        "episodes_per_hour": round(len(new) / wall * 3600.0, 2) if new else None,
        "wall_s": round(wall, 3) if new else 0.0,
        "workers": workers,
        "executor": cfg.executor,
        "episodes": len(new),
    }


def build_results(
    cfg: BenchConfig,
    run: ResolvedRun,
    meta: Any,
    records: list[EpisodeRecord],
    throughput: dict[str, Any],
    provenance: dict[str, Any],
) -> dict[str, Any]:
    """The results.json dict (schema in ``harness.records``); only records of the run's (task, seed) keys count."""
    planned = {(t, s) for t, seeds in run.seeds.items() for s in seeds}
    records = [r for r in records if r.key in planned]
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(cfg).items()}
    config["resolved"] = run.outcome_config
    return {
        "schema_version": SCHEMA_VERSION,
        "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "policy": {"spec": cfg.policy, **json.loads(json.dumps(dataclasses.asdict(meta), default=str))},
        "config": config,
        "seeds": run.seeds,
        **aggregate(records, list(run.seeds)),
        **variant_blocks(records, cfg.instruction_split),
        "throughput": throughput,
        "provenance": provenance,
    }


def _bench_in(
    cfg: BenchConfig,
    folder: RunFolder,
    env_factory: Callable[..., Any] | None,
    policy_factory: Callable[[], Any] | None,
) -> dict[str, Any]:
    """The body of :func:`run_bench`, run while OUT is locked; returns the results.json dict (written)."""
    from harness.provenance import collect_provenance

    policy_factory = policy_factory or functools.partial(make_policy, cfg.policy)
    policy = policy_factory()
    meta = policy.metadata
    run = resolve(cfg, meta, env_factory, policy_factory)
    check_before_run(meta, run, local=cfg.executor == "local")
    done_records = prepare_out(cfg, run)
    folder.keep_partial()
    if cfg.workers > 1 or cfg.episode_timeout is not None or cfg.executor == "ray":
        policy = None  # workers build their own; free this one (a VLA can be large)
    new, wall, used = _execute(cfg, run, policy, {r.key for r in done_records})
    provenance = collect_provenance(meta, cfg.sim_backend, cfg.render_backend)
    records = read_records(cfg.out / EPISODES_FILE).records
    results = build_results(cfg, run, meta, records, _throughput(new, wall, used, cfg), provenance)
    write_json_atomic(cfg.out / RESULTS_FILE, results)
    return results


def run_bench(
    cfg: BenchConfig, env_factory: Callable[..., Any] | None = None, policy_factory: Callable[[], Any] | None = None
) -> int:
    """Run ``vla bench``; returns the exit status (1 when ``--fail-under`` is not met, else 0).

    ``env_factory`` / ``policy_factory`` (picklable, module-level) replace ``envs.wrapper.make_env`` and
    ``make_policy(cfg.policy)`` -- tests inject fakes this way.

    Raises:
        PolicyMismatchError: the policy does not fit a task (before any episode runs).
        ValueError: bad settings, an OUT that already holds a run (without --resume) or a resume with other
            settings.
        RunLockedError: another run is using OUT (one line naming its PID and start time).
    """
    with RunFolder(cfg.out, "vla bench") as folder:
        results = _bench_in(cfg, folder, env_factory, policy_factory)
    from harness.summary import print_summary

    print_summary(results, cfg.out)
    rate = results["overall"]["success_rate"]
    if cfg.fail_under is not None and (rate is None or rate < cfg.fail_under):
        shown = "n/a (no ok episode)" if rate is None else f"{rate:.3f}"
        print(f"FAIL: overall success rate {shown} is below --fail-under {cfg.fail_under}", file=sys.stderr)
        return 1
    return 0
