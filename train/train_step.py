"""One optimizer step of ``vla train`` and what it needs: the run's state (:class:`TrainRun`), the endless batch
iterator, the model inputs of a batch, the train-metric logging and the validation pass (:mod:`train.trainer` runs
the loop around them).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator, Mapping
from typing import Any

import torch

from train.sampler import augmentation_generator, iterate_batches, validation_batches
from train.train_config import TrainConfig

METRIC_KEYS = ("loss", "curr_action_l1", "future_actions_l1")
"""The loss terms every model forward returns, logged under ``train/`` and ``val/``."""


def metric_keys(cfg: TrainConfig) -> tuple[str, ...]:
    """:data:`METRIC_KEYS`, plus ``keypose_l1`` in a keypose_aux run (its batches carry keyposes)."""
    return (*METRIC_KEYS, "keypose_l1") if cfg.data.keyposes else METRIC_KEYS


@dataclasses.dataclass
class TrainRun:
    """Everything the loop needs (built by :func:`_setup`)."""

    cfg: TrainConfig
    accelerator: Any
    model: Any
    processor: Any
    optimizer: Any
    scheduler: Any
    params: list
    prepared: Any
    train_ds: Any
    val_ds: Any
    sampler: Any
    data_info: dict
    milestones: tuple[int, ...]
    start_step: int
    total_params: int
    trainable_params: int


def batch_stream(run: TrainRun) -> Iterator[tuple[int, dict]]:
    """Endless (micro-batch index, collated batch) pairs from the run's resume point (:mod:`train.sampler`)."""
    cfg = run.cfg
    pin = run.accelerator.device.type == "cuda"

    def make_loader(dataset, batch_lists):
        return torch.utils.data.DataLoader(
            dataset,
            batch_sampler=batch_lists,
            num_workers=cfg.compute.num_workers,
            collate_fn=dataset.collate_fn,
            pin_memory=pin,
            generator=torch.Generator(),
        )  # never draws from the global RNG

    return iterate_batches(run.train_ds, run.sampler, run.start_step * cfg.optim.grad_accum, make_loader)


def model_inputs(
    batch: Mapping[str, Any], processor, train: bool, generator: torch.Generator | None, device: torch.device
) -> dict[str, torch.Tensor]:
    """VLA.forward kwargs from a collated batch: images + instructions through the processor (augmented when
    ``train``), normalized actions, padding mask and proprio (with the processor's proprio noise when ``train``),
    all moved to ``device``."""
    enc = processor(batch["images"], batch["instruction"], train=train, generator=generator)
    inputs = {**enc, "actions": batch["actions"], "action_is_pad": batch["action_is_pad"]}
    for key in ("keypose", "keypose_mask"):  # only in batches of a keypose_aux run (DataConfig.keyposes)
        if key in batch:
            inputs[key] = batch[key]
    if "proprio" in batch:
        inputs["proprio"] = processor.augment_proprio(batch["proprio"], generator) if train else batch["proprio"]
    return {k: v.to(device, non_blocking=True) for k, v in inputs.items()}


def train_step(run: TrainRun, batches) -> tuple[dict[str, float], float, float]:
    """One optimizer step over grad_accum micro-batches; returns (record, wall time, time waiting for data)."""

    cfg, acc = run.cfg, run.accelerator
    t0 = time.perf_counter()
    waited = 0.0
    metrics = metric_keys(cfg)
    sums = torch.zeros(len(metrics), dtype=torch.float64)
    grad_norm = torch.tensor(float("nan"))
    lr = run.optimizer.param_groups[0]["lr"]
    for _ in range(cfg.optim.grad_accum):
        tw = time.perf_counter()
        m, batch = next(batches)
        waited += time.perf_counter() - tw
        gen = augmentation_generator(cfg.seed, acc.process_index, m)
        inputs = model_inputs(batch, run.processor, True, gen, acc.device)
        with acc.accumulate(run.model):
            out = run.model(**inputs)
            acc.backward(out["loss"])
            if acc.sync_gradients:
                grad_norm = acc.clip_grad_norm_(run.params, cfg.optim.max_grad_norm or float("inf"))
            run.optimizer.step()
            run.optimizer.zero_grad(set_to_none=True)
        sums += torch.stack([out[k].detach().float() for k in metrics]).double().cpu()
    run.scheduler.step()
    values = (sums / cfg.optim.grad_accum).tolist()
    record = {**dict(zip(metrics, values)), "lr": float(lr), "grad_norm": float(grad_norm)}
    return record, time.perf_counter() - t0, waited


def log_train(run: TrainRun, logger, step: int, records: list[dict[str, float]], window: dict) -> None:
    acc, cfg = run.accelerator, run.cfg
    keys = (*metric_keys(cfg), "grad_norm")
    local = torch.tensor([[r[k] for k in keys] for r in records], dtype=torch.float64).mean(0)
    mean = acc.reduce(local.to(acc.device), reduction="mean").cpu()
    scalars = {f"train/{k}": float(v) for k, v in zip(keys, mean.tolist())}
    samples = cfg.optim.batch_size * cfg.optim.grad_accum * acc.num_processes * window["steps"]
    scalars["train/lr"] = records[-1]["lr"]
    scalars["train/samples_per_s"] = samples / max(window["time"], 1e-9)
    scalars["train/data_wait_frac"] = window["wait"] / max(window["time"], 1e-9)
    logger.log(step, scalars)


@torch.no_grad()
def validate(run: TrainRun) -> dict[str, float]:
    """Mean val metrics over the fixed validation batches (all processes; sample-weighted)."""

    cfg, acc = run.cfg, run.accelerator
    lists = validation_batches(
        len(run.val_ds), cfg.optim.batch_size, cfg.cadence.val_batches, cfg.seed, acc.process_index, acc.num_processes
    )
    metrics = metric_keys(cfg)
    sums = torch.zeros(len(metrics) + 1, dtype=torch.float64)
    run.model.eval()
    try:
        if lists:
            loader = torch.utils.data.DataLoader(
                run.val_ds, batch_sampler=lists, num_workers=0, collate_fn=run.val_ds.collate_fn
            )
            for batch in loader:
                out = run.model(**model_inputs(batch, run.processor, False, None, acc.device))
                n = float(batch["actions"].shape[0])
                sums += torch.tensor([float(out[k]) * n for k in metrics] + [n], dtype=torch.float64)
    finally:
        run.model.train()
    total = acc.reduce(sums.to(acc.device), reduction="sum").cpu()
    return {f"val/{k}": float(total[i] / max(total[-1], 1.0)) for i, k in enumerate(metrics)}
