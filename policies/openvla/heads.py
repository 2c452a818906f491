"""Small modules around the LLM: projector, proprio projector, L1 action head, FiLM, and action-token bins.

Module and parameter names follow the upstream files so that checkpoints map by name:
prismatic ``extern/hf/modeling_prismatic.PrismaticProjector`` (fc1/fc2/fc3), openvla-oft
``prismatic/models/projectors.ProprioProjector`` (fc1/fc2) and ``prismatic/models/action_heads.py``
(``L1RegressionActionHead.model`` = ``MLPResNet``).
"""

from __future__ import annotations

import torch
from torch import nn


class Projector(nn.Module):
    """Vision features -> LLM embeddings.

    ``fused``: fc1 V->4V, GELU, fc2 4V->D, GELU, fc3 D->D (OpenVLA's ``fused-gelu-mlp`` for DINOv2+SigLIP);
    otherwise fc1 V->D, GELU, fc2 D->D (``gelu-mlp``). All layers have biases; exact GELU.
    """

    def __init__(self, vision_dim: int, llm_dim: int, fused: bool) -> None:
        super().__init__()
        self.fused = fused
        if fused:
            self.fc1 = nn.Linear(vision_dim, 4 * vision_dim)
            self.fc2 = nn.Linear(4 * vision_dim, llm_dim)
            self.fc3 = nn.Linear(llm_dim, llm_dim)
        else:
            self.fc1 = nn.Linear(vision_dim, llm_dim)
            self.fc2 = nn.Linear(llm_dim, llm_dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, V) -> (B, N, D)."""
        x = self.fc2(self.act(self.fc1(x)))
        return self.fc3(self.act(x)) if self.fused else x


class ProprioProjector(nn.Module):
    """Proprio (B, P) normalized -> one LLM token (B, D): fc1 P->D, GELU, fc2 D->D (OFT ``ProprioProjector``)."""

    def __init__(self, proprio_dim: int, llm_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(proprio_dim, llm_dim)
        self.act_fn1 = nn.GELU()
        self.fc2 = nn.Linear(llm_dim, llm_dim)

    def forward(self, proprio: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act_fn1(self.fc1(proprio)))


class MLPResNetBlock(nn.Module):
    """x + ReLU(Linear(LayerNorm(x))) (OFT ``MLPResNetBlock``; ``ffn`` indices match its checkpoint keys)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.ffn = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.ffn(x)


class MLPResNet(nn.Module):
    """LayerNorm, Linear in->hidden, ReLU, residual blocks, LayerNorm, Linear hidden->out (OFT ``MLPResNet``)."""

    def __init__(self, num_blocks: int, input_dim: int, hidden_dim: int, output_dim: int) -> None:
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(input_dim)
        self.fc1 = nn.Linear(input_dim, hidden_dim)
        self.relu = nn.ReLU()
        self.mlp_resnet_blocks = nn.ModuleList([MLPResNetBlock(hidden_dim) for _ in range(num_blocks)])
        self.layer_norm2 = nn.LayerNorm(hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, output_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.fc1(self.layer_norm1(x)))
        for block in self.mlp_resnet_blocks:
            x = block(x)
        return self.fc2(self.layer_norm2(x))


class L1RegressionActionHead(nn.Module):
    """OFT's L1 head: (B, H*A, D) action hidden states -> (B, H, A) normalized actions.

    The H*A hidden states of one chunk step are concatenated (A*D features per step) before the MLP-ResNet.
    """

    def __init__(self, llm_dim: int, hidden_dim: int, action_dim: int, chunk_size: int, num_blocks: int = 2) -> None:
        super().__init__()
        self.chunk_size = chunk_size
        self.action_dim = action_dim
        self.model = MLPResNet(num_blocks, llm_dim * action_dim, hidden_dim, action_dim)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        b = hidden.shape[0]
        return self.model(hidden.reshape(b, self.chunk_size, -1))  # (B, H, A*D) -> (B, H, A)


class FiLM(nn.Module):
    """Per-ViT-block FiLM generators: gamma = scale(l), beta = shift(l) from the mean language embedding l.

    ``layers[featurizer_name][i]`` holds ``scale`` and ``shift`` (Linear D_llm -> ViT width) for block i, as OFT's
    ``FiLMedVisionTransformerBlock``. Initialised to zero here so that FiLM starts as the identity (OFT uses
    the default Linear init); gradients still flow through the zero weights.
    """

    def __init__(self, llm_dim: int, featurizers: dict[str, tuple[int, int]]) -> None:
        super().__init__()
        self.layers = nn.ModuleDict()
        for name, (width, n_blocks) in featurizers.items():
            blocks = nn.ModuleList()
            for _ in range(n_blocks):
                block = nn.Module()
                block.scale = nn.Linear(llm_dim, width)
                block.shift = nn.Linear(llm_dim, width)
                for lin in (block.scale, block.shift):
                    nn.init.zeros_(lin.weight)
                    nn.init.zeros_(lin.bias)
                blocks.append(block)
            self.layers[name] = blocks

    def forward(self, language: torch.Tensor) -> dict[str, list[tuple[torch.Tensor, torch.Tensor]]]:
        """(B, D_llm) mean language embedding -> featurizer name -> [(gamma, beta) per block], each (B, width)."""
        return {
            name: [(blk.scale(language), blk.shift(language)) for blk in blocks] for name, blocks in self.layers.items()
        }


# ---- discretized action tokens (openvla ``prismatic/vla/action_tokenizer.py``) --------------------------------
def action_bins(n_bins: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Bin edges: ``linspace(-1, 1, n_bins)`` in float64, as OpenVLA's ``ActionTokenizer.bins``."""
    return torch.linspace(-1.0, 1.0, n_bins, dtype=torch.float64, device=device)


def bin_centers(n_bins: int, device: torch.device | str | None = None) -> torch.Tensor:
    """(n_bins - 1,) float64 midpoints of consecutive bin edges (``ActionTokenizer.bin_centers``)."""
    edges = action_bins(n_bins, device)
    return (edges[:-1] + edges[1:]) / 2.0


def actions_to_token_ids(actions: torch.Tensor, n_bins: int, end_id: int) -> torch.Tensor:
    """Normalized actions (..., A) in [-1, 1] -> token ids (..., A) int64.

    ``id = end_id - np.digitize(clip(a, -1, 1), bins)`` (OpenVLA ``ActionTokenizer.__call__``, with
    ``end_id = tokenizer.vocab_size``), so ids lie in [end_id - n_bins, end_id - 1].
    """
    a = actions.detach().to(torch.float64).clamp(-1.0, 1.0)
    d = torch.bucketize(a, action_bins(n_bins, a.device), right=True)  # == np.digitize(a, bins)
    return (end_id - d).to(torch.int64)


def token_ids_to_actions(ids: torch.Tensor, n_bins: int, end_id: int) -> torch.Tensor:
    """Token ids (...) -> normalized actions (...) float32: ``bin_centers[clip(end_id - id - 1, 0, n_bins - 2)]``.

    Exactly OpenVLA's ``predict_action`` decode (ids outside the action range clip to the extreme bins).
    """
    idx = (end_id - ids.to(torch.int64) - 1).clamp(0, n_bins - 2)
    return bin_centers(n_bins, ids.device)[idx].to(torch.float32)
