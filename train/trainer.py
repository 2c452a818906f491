"""The training loop of ``vla train`` on accelerate: one process, or DDP under ``accelerate launch``.

    vla train --data data/LiftBar --out runs/x --steps 2000                                      # one process
    accelerate launch --multi_gpu --num_processes 2 -m scripts.cli train --data data/LiftBar --out runs/x  # DDP

(``--multi_gpu`` selects accelerate's torchrun launcher; without CUDA each process runs on the CPU with the gloo
backend. ``accelerate launch --cpu`` starts a single process.)

Per optimizer step: ``grad_accum`` micro-batches (``accelerator.accumulate``), each read as uint8 frames by the
DataLoader workers in the order of :mod:`train.sampler`, preprocessed + augmented in the main process with a
generator seeded from (seed, rank, micro-batch index), forward under bf16 autocast when mixed precision is on,
L1 (or token cross-entropy) on normalized actions; then clip, AdamW step, LambdaLR step. Every ``log_every``
steps the metrics of :mod:`train.logging_utils` are logged; every ``val_every`` steps the fixed validation
batches; every ``bench_every`` steps the optional simulator-benchmark hook; every ``save_every`` steps (and at the
end) a checkpoint (:mod:`train.checkpointing`). ``--resume`` continues from ``RUN/checkpoints/last`` exactly.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import warnings
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from envs.machine import resolve_precision
from policies.normalization import NormStats, save_dataset_statistics
from train.checkpointing import (
    CHECKPOINTS_DIR,
    TrainingState,
    capture_rng,
    checkpoint_config,
    last_checkpoint,
    remove_stale_temporaries,
    write_checkpoint,
)
from train.resume import check_same_data, restore_training_state, resume_source
from train.stats import episode_task, sample_weights
from train.train_config import MIN_GLOBAL_BATCH, TrainConfig
from train.train_step import TrainRun, batch_stream, log_train, train_step, validate

PolicyParts = tuple[Any, Any, NormStats, dict]
"""(model in eval mode, VLAProcessor, NormStats, checkpoint-style config dict) -- as ``load_checkpoint_model``."""
EvaluateFn = Callable[[int, Callable[[], PolicyParts]], Mapping[str, float]]
"""``evaluate(step, policy_factory) -> {metric: value}``, logged under ``bench/``; main process only."""


@dataclasses.dataclass
class TrainResult:
    """What :func:`train` returns (on every process).

    Attributes:
        run_dir: the run folder. last_checkpoint: the newest checkpoint directory.
        step: optimizer steps done. history: per optimizer step of this session, this process's mean ``loss``,
            ``curr_action_l1``, ``future_actions_l1``, the ``lr`` used and the ``grad_norm`` before clipping.
    """

    run_dir: Path
    last_checkpoint: Path | None
    step: int
    history: list[dict[str, float]]
    is_main_process: bool = True


def run_train(cfg: TrainConfig, evaluate: EvaluateFn | None = None) -> int:
    """``vla train``: train and say where the last checkpoint is; returns 0 (errors propagate to ``vla``, which
    prints expected ones as one line)."""
    result = train(cfg, evaluate=evaluate)
    if result.is_main_process and result.last_checkpoint is not None:
        print(f"trained to step {result.step}; last checkpoint: {result.last_checkpoint}", file=sys.stderr)
    return 0


def train(cfg: TrainConfig, evaluate: EvaluateFn | None = None) -> TrainResult:
    """Train (or resume) the run ``cfg.out`` to ``cfg.optim.steps`` optimizer steps.

    The run folder is locked for the whole run (``common.locks.RunFolder``, by the first process): a second
    ``vla train`` on it fails at once. A folder this call creates is removed again if the run fails before its
    first checkpoint (nothing half-written is left behind).

    Raises:
        EpisodeDataError: invalid data (the file, key and step). ResumeError: --resume without a checkpoint, with a
            config that changes the run, or a run folder that already has checkpoints without --resume.
        ValueError: bad model settings. RunLockedError: another run uses the folder.
    """
    import contextlib

    from accelerate.utils import set_seed

    from common.locks import RunFolder

    first_process = int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) == 0
    existed = cfg.out.exists()
    with RunFolder(cfg.out, "vla train") if first_process else contextlib.nullcontext() as folder:
        if cfg.compute.threads is not None:
            torch.set_num_threads(cfg.compute.threads)
        ckpt, raw = resume_source(cfg, folder_existed=existed)
        accelerator = _make_accelerator(cfg)
        set_seed(cfg.seed)
        run = _setup(cfg, accelerator, ckpt, raw)
        if evaluate is None and cfg.cadence.bench_every and accelerator.is_main_process:
            warnings.warn(
                "bench_every is set but no benchmark hook was given; in-loop benchmarks are skipped", stacklevel=2
            )
        return _loop(run, evaluate, folder)


# ---- setup --------------------------------------------------------------------------------------------------
def _make_accelerator(cfg: TrainConfig):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    cuda = torch.cuda.is_available()
    if cfg.compute.device == "cuda" and not cuda:
        raise ValueError("device='cuda' but torch sees no CUDA device")
    use_cpu = cfg.compute.device == "cpu" or not cuda
    precision, reason = resolve_precision(cfg.compute.mixed_precision, "cpu" if use_cpu else "cuda")
    if cfg.progress or cfg.compute.mixed_precision != precision:
        print(f"mixed precision: {precision} ({reason})", file=sys.stderr)
    # accelerate keeps its state in process-wide singletons; a second train() in the same process (tests, notebooks,
    # benchmarks) may use another precision. The PartialState (process group) is kept.
    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()
    return Accelerator(
        mixed_precision=precision,
        gradient_accumulation_steps=cfg.optim.grad_accum,
        cpu=use_cpu,
        step_scheduler_with_optimizer=False,
    )


def _setup(cfg: TrainConfig, accelerator, ckpt: Path | None, raw: dict | None) -> TrainRun:
    from policies.openvla.lora import count_parameters
    from train.dataset import EpisodeDataset
    from train.model_setup import (
        base_dtype,
        build_fresh_model,
        build_resumed_model,
        check_prompt_lengths,
        load_finetune_weights,
        make_optimizer,
        wrap_for_finetune,
    )
    from train.sampler import ResumableBatchSampler
    from train.stats import prepare_data

    dcfg = cfg.data
    prepared = prepare_data(dcfg)  # validates; writes nothing
    if prepared.summary.warnings and accelerator.is_main_process:
        shown = "; ".join(prepared.summary.warnings[:3])
        more = (
            f" (+{len(prepared.summary.warnings) - 3} more; `vla data check` lists them)"
            if len(prepared.summary.warnings) > 3
            else ""
        )
        warnings.warn(f"values out of their plausible range: {shown}{more}", UserWarning, stacklevel=3)
    dtype = base_dtype(cfg, str(accelerator.mixed_precision))
    if ckpt is not None:
        check_same_data(prepared, ckpt)
        model, processor = build_resumed_model(cfg, ckpt, raw, dtype)
    else:
        model, processor = build_fresh_model(cfg, prepared, dtype)
    check_prompt_lengths(processor, model.config, prepared)
    dcfg.keyposes = bool(model.config.keypose_aux)  # the aux loss's targets, whether set here or by --base
    dcfg.__post_init__()
    model = wrap_for_finetune(cfg, model)
    if ckpt is not None:
        load_finetune_weights(model, ckpt, raw["finetune"])
    trainable, total = count_parameters(model)
    milestones = cfg.milestones()
    if cfg.compute.torch_compile:
        (model.get_base_model() if hasattr(model, "get_base_model") else model).compile_submodules()
    optimizer, scheduler, params = make_optimizer(cfg, model, milestones)
    model, optimizer = accelerator.prepare(model, optimizer)
    train_ds = EpisodeDataset(dcfg, prepared.train_episodes, prepared.norm_stats, augment=True)
    val_ds = EpisodeDataset(dcfg, prepared.val_episodes, prepared.norm_stats) if prepared.val_episodes else None
    sampler = ResumableBatchSampler(
        len(train_ds),
        cfg.optim.batch_size,
        cfg.seed,
        accelerator.process_index,
        accelerator.num_processes,
        weights=sample_weights(prepared.train_episodes, dcfg),
    )
    if accelerator.is_main_process:
        _warn_small_batch(cfg, accelerator.num_processes)
    start = 0
    if ckpt is not None:
        start = restore_training_state(ckpt, optimizer, scheduler, accelerator, len(train_ds), cfg)
    data_info = {
        **_jsonable(dataclasses.asdict(dcfg)),
        "image_size": list(prepared.summary.image_size),
        "tasks": list(prepared.summary.tasks),
        "visual_quality": list(prepared.summary.visual_qualities),
        "train_episodes": _episode_ids(prepared.train_episodes, dcfg),
        "val_episodes_used": _episode_ids(prepared.val_episodes, dcfg),
        "task_episodes": dict(Counter(episode_task(e) for e in prepared.train_episodes)),
    }
    if accelerator.is_main_process:
        save_dataset_statistics(cfg.out / "dataset_statistics.json", prepared.all_stats())
        remove_stale_temporaries(cfg.out / CHECKPOINTS_DIR)
    return TrainRun(
        cfg=cfg,
        accelerator=accelerator,
        model=model,
        processor=processor,
        optimizer=optimizer,
        scheduler=scheduler,
        params=params,
        prepared=prepared,
        train_ds=train_ds,
        val_ds=val_ds,
        sampler=sampler,
        data_info=data_info,
        milestones=milestones,
        start_step=start,
        total_params=total,
        trainable_params=trainable,
    )


def _episode_ids(episodes, dcfg) -> list:
    """Episode indices (one folder) or "folder/index" strings (several folders, whose indices repeat)."""
    if not dcfg.more_data:
        return [e.index for e in episodes]
    return [f"{e.path.parent.name}/{e.index}" for e in episodes]


def _jsonable(d: Mapping[str, Any]) -> dict[str, Any]:
    def one(v: Any) -> Any:
        return str(v) if isinstance(v, Path) else [one(x) for x in v] if isinstance(v, tuple) else v

    return {k: one(v) for k, v in d.items()}


def _warn_small_batch(cfg: TrainConfig, processes: int) -> None:
    global_batch = cfg.optim.batch_size * cfg.optim.grad_accum * processes
    if global_batch < MIN_GLOBAL_BATCH:
        warnings.warn(
            f"WARNING: global batch {global_batch} (batch_size {cfg.optim.batch_size} x grad_accum "
            f"{cfg.optim.grad_accum} x {processes} process(es)) is below {MIN_GLOBAL_BATCH}: RoboTwin's OpenVLA-OFT "
            "port reports that such runs collapse to replaying one trajectory whatever the policy sees; raise "
            "--grad-accum",
            UserWarning,
            stacklevel=3,
        )


# ---- loop ---------------------------------------------------------------------------------------------------
def _loop(run: TrainRun, evaluate: EvaluateFn | None, folder: Any = None) -> TrainResult:
    from tqdm.auto import tqdm

    from train.logging_utils import RunLogger

    cfg, acc = run.cfg, run.accelerator
    main = acc.is_main_process
    logger = RunLogger(
        cfg.out,
        enabled=main,
        wandb_project=cfg.cadence.wandb_project if cfg.cadence.wandb else None,
        config=cfg.to_dict(),
        start_step=run.start_step,
        run_name=cfg.out.name,
    )
    bar = tqdm(
        total=cfg.optim.steps,
        initial=run.start_step,
        disable=not (main and cfg.progress),
        desc="train",
        dynamic_ncols=True,
    )
    batches = batch_stream(run)
    history: list[dict[str, float]] = []
    window = {"time": 0.0, "wait": 0.0, "steps": 0}
    last = last_checkpoint(cfg.out)
    try:
        for step in range(run.start_step + 1, cfg.optim.steps + 1):
            record, elapsed, waited = train_step(run, batches)
            history.append(record)
            window["time"] += elapsed
            window["wait"] += waited
            window["steps"] += 1
            bar.update(1)
            bar.set_postfix(loss=f"{record['loss']:.4f}")
            final = step == cfg.optim.steps
            if step % cfg.cadence.log_every == 0 or final:
                log_train(run, logger, step, history[-window["steps"] :], window)
                window = {"time": 0.0, "wait": 0.0, "steps": 0}
            if run.val_ds is not None and (step % cfg.cadence.val_every == 0 or final):
                logger.log(step, validate(run))
            if evaluate is not None and cfg.cadence.bench_every and (step % cfg.cadence.bench_every == 0 or final):
                _run_evaluate(run, evaluate, logger, step)
            if step % cfg.cadence.save_every == 0 or final:
                last = _save(run, step)
                if folder is not None:
                    folder.keep_partial()
    finally:
        bar.close()
        logger.close()
        del batches
        for dataset in (run.train_ds, run.val_ds):
            if dataset is not None:
                dataset.close()
    return TrainResult(
        run_dir=cfg.out,
        last_checkpoint=last,
        step=max(run.start_step, cfg.optim.steps),
        history=history,
        is_main_process=main,
    )


def _current_config(run: TrainRun, step: int) -> dict[str, Any]:
    model = run.accelerator.unwrap_model(run.model)
    vla = model.get_base_model() if hasattr(model, "get_base_model") else model
    return checkpoint_config(
        model_config=vla.config,
        cfg=run.cfg,
        data=run.data_info,
        unnorm_key=run.prepared.unnorm_key,
        finetune=run.cfg.finetune.mode,
        step=step,
        trainable_params=run.trainable_params,
        total_params=run.total_params,
    )


def _run_evaluate(run: TrainRun, evaluate: EvaluateFn, logger, step: int) -> None:
    acc = run.accelerator
    if acc.is_main_process:
        model = acc.unwrap_model(run.model)

        def factory() -> PolicyParts:
            return model.eval(), run.processor, run.prepared.norm_stats, _current_config(run, step)

        try:
            with acc.autocast():  # a bf16 base with float32 heads needs autocast, as in training
                results = evaluate(step, factory)
        finally:
            run.model.train()
        logger.log(step, {f"bench/{k}": float(v) for k, v in dict(results or {}).items()})
    acc.wait_for_everyone()


def _save(run: TrainRun, step: int) -> Path | None:
    from accelerate.utils import gather_object

    acc, cfg = run.accelerator, run.cfg
    rngs = gather_object([capture_rng()])  # collective: every process takes part
    target = None
    if acc.is_main_process:
        state = {
            "step": step,
            "steps": cfg.optim.steps,
            "micro_batch": step * cfg.optim.grad_accum,
            "epoch": run.sampler.position(step * cfg.optim.grad_accum)[0],
            "samples_seen": step * cfg.optim.grad_accum * cfg.optim.batch_size * acc.num_processes,
            "world_size": acc.num_processes,
            "seed": cfg.seed,
            "num_train_samples": len(run.train_ds),
            "batches_per_epoch": run.sampler.batches_per_epoch,
            "lr_milestones": list(run.milestones),
            "python_rng": [r["python"] for r in rngs],
            "numpy_rng": [r["numpy"] for r in rngs],
        }
        rng = {"torch_cpu": torch.stack([r["torch_cpu"] for r in rngs])}
        if all("cuda" in r for r in rngs):
            rng["cuda"] = torch.stack([r["cuda"].cpu() for r in rngs])
        training_state = TrainingState(
            optimizer=run.optimizer.state_dict(), scheduler=run.scheduler.state_dict(), rng=rng, state=state
        )
        config = _current_config(run, step)
        target = write_checkpoint(
            cfg.out,
            step,
            model=acc.unwrap_model(run.model),
            processor=run.processor,
            norm_stats=run.prepared.all_stats(),
            config=config,
            training_state=training_state,
            keep_last=cfg.cadence.keep_last,
        )
    acc.wait_for_everyone()
    return target if acc.is_main_process else last_checkpoint(cfg.out)
