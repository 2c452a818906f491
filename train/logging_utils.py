"""Training logs: TensorBoard (always), ``metrics.jsonl`` (always) and Weights & Biases (optional, offline).

Scalars per logged step (names as written): ``train/loss``, ``train/curr_action_l1``, ``train/future_actions_l1``,
``train/lr``, ``train/grad_norm``, ``train/samples_per_s`` (global samples / wall time), ``train/data_wait_frac``
(time blocked on the DataLoader / wall time), ``val/loss``, ``val/curr_action_l1``, ``val/future_actions_l1``
(plus ``train/keypose_l1`` and ``val/keypose_l1`` in a ``keypose_aux`` run), and whatever the in-loop benchmark
hook returns under ``bench/``. ``metrics.jsonl`` holds one JSON object per call: ``{"step": N, "time": unix_s,
<name>: value, ...}``.

Only the main process logs; the other processes get a disabled logger.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from common.files import write_text_atomic

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


class RunLogger:
    """Scalar logger of one run.

    Args:
        run_dir: the run folder (``tensorboard/`` and ``metrics.jsonl`` go there).
        enabled: False on non-main processes (every method is then a no-op).
        wandb_project: wandb project; None disables wandb. Mode: ``WANDB_MODE`` or ``offline``.
        config: run config logged to wandb.
        start_step: the step this attempt starts from (0 for a fresh start): TensorBoard events and metrics.jsonl
            records at steps > start_step from an interrupted attempt are purged; on resume metrics.jsonl gets
            ``{"step": start_step, "time": ..., "event": "resume"}``.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike,
        enabled: bool = True,
        wandb_project: str | None = None,
        config: Mapping[str, Any] | None = None,
        start_step: int = 0,
        run_name: str | None = None,
    ) -> None:
        self.enabled = enabled
        self.run_dir = Path(run_dir)
        self._tb = None
        self._wandb = None
        self._jsonl = None
        if not enabled:
            return
        from torch.utils.tensorboard import SummaryWriter

        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._tb = SummaryWriter(str(self.run_dir / TENSORBOARD_DIR), purge_step=start_step + 1)
        _truncate_metrics(self.run_dir / METRICS_FILE, start_step)  # an earlier attempt's steps after start_step
        self._jsonl = open(self.run_dir / METRICS_FILE, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())
        if start_step:  # marks where the resumed attempt starts (timing tools skip the pause before it)
            self._jsonl.write(json.dumps({"step": int(start_step), "time": time.time(), "event": "resume"}) + "\n")
            self._jsonl.flush()
        if wandb_project is not None:
            import wandb

            self._wandb = wandb.init(
                project=wandb_project,
                dir=str(self.run_dir),
                config=dict(config or {}),
                mode=os.environ.get("WANDB_MODE", "offline"),
                name=run_name,
                resume="allow" if start_step else None,
            )

    def log(self, step: int, scalars: Mapping[str, float]) -> None:
        """Write ``scalars`` (name -> number) at ``step``; non-finite values are written as they are."""
        if not self.enabled or not scalars:
            return
        clean = {k: float(v) for k, v in scalars.items()}
        for name, value in clean.items():
            self._tb.add_scalar(name, value, step)
        record = {
            "step": int(step),
            "time": time.time(),
            **{k: (v if math.isfinite(v) else str(v)) for k, v in clean.items()},
        }
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()
        if self._wandb is not None:
            self._wandb.log(clean, step=step)

    def flush(self) -> None:
        """Flush TensorBoard events to disk."""
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        """Flush and close every sink."""
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop records after ``step`` (logged by an attempt that stopped before its next checkpoint)."""
    if not path.is_file():
        return
    keep = [json.dumps(rec) for rec in _parse_metrics(path) if rec["step"] <= step]
    write_text_atomic(path, "".join(ln + "\n" for ln in keep))


def _parse_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl; a torn last line (a run killed while writing it) is dropped.

    Raises:
        ValueError: a line before the last is not JSON (the file was edited or damaged), naming file and line.
    """
    lines = [ln for ln in path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    records = []
    for number, line in enumerate(lines, 1):
        try:
            records.append(json.loads(line))
        except ValueError:
            if number == len(lines):
                break
            raise ValueError(f"{path}: line {number} is not JSON (expected one metrics record per line)") from None
    return records


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of ``run_dir/metrics.jsonl`` in order (empty when absent; a torn last line is dropped)."""
    path = Path(run_dir) / METRICS_FILE
    return _parse_metrics(path) if path.is_file() else []
