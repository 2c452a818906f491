"""Config dataclass of ``vla check-checkpoint`` (light: no torch import; field docstrings are the --help)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

from tyro.conf import Positional


@dataclasses.dataclass
class CheckCheckpointConfig:
    """Load a checkpoint, run the stored reference inputs, print max |diff| for every stored output."""

    checkpoint: Positional[Path]
    """OpenVLA-format folder (with optional OFT head files) or a `vla train` checkpoint (step_N, last or RUN)."""
    reference: Path
    """reference_io.safetensors with inputs and outputs of the original code (a sibling .json adds unnorm_key)."""
    atol: float = 1e-5
    """Absolute tolerance for float outputs; token ids and rebuilt id tensors must match exactly."""
    dtype: Literal["float32", "bfloat16"] = "float32"
    """Weights and compute dtype (bfloat16 needs a much larger atol)."""
    device: str = "cpu"
    """Torch device, e.g. cpu or cuda."""

    def __post_init__(self) -> None:
        self.checkpoint = Path(self.checkpoint)
        self.reference = Path(self.reference)
        if not self.atol >= 0:
            raise ValueError(f"atol must be >= 0, got {self.atol}")
