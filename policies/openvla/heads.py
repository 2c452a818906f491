"""Small modules around the LLM: projector, proprio projector, L1 and flow-matching action heads, FiLM, and
action-token bins.

Module and parameter names follow the upstream files so that checkpoints map by name:
prismatic ``extern/hf/modeling_prismatic.PrismaticProjector`` (fc1/fc2/fc3), openvla-oft
``prismatic/models/projectors.ProprioProjector`` (fc1/fc2) and ``prismatic/models/action_heads.py``
(``L1RegressionActionHead.model`` = ``MLPResNet``).
"""

from __future__ import annotations

import math

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


def time_embedding(t: torch.Tensor, dim: int, min_period: float = 4e-3, max_period: float = 4.0) -> torch.Tensor:
    """Sine-cosine embedding of flow times t (B,) in [0, 1] -> (B, dim) float32, periods geometric from
    ``min_period`` to ``max_period`` (openpi ``models/pi0.py`` ``posemb_sincos``; its defaults)."""
    if dim % 2:
        raise ValueError(f"time_embedding: dim must be even, got {dim}")
    frac = torch.linspace(0.0, 1.0, dim // 2, dtype=torch.float32, device=t.device)
    period = min_period * (max_period / min_period) ** frac
    angle = t.to(torch.float32)[:, None] * (2 * math.pi / period)[None]
    return torch.cat([torch.sin(angle), torch.cos(angle)], dim=-1)


class FlowMatchingActionHead(nn.Module):
    """pi0-style flow-matching action expert on the VLA's action hidden states (Black et al. 2024, "pi0: A
    Vision-Language-Action Flow Model for General Robot Control", Sec. IV; conditional flow matching of Lipman et
    al. 2023 on the linear / rectified-flow path of Liu et al. 2023), with openpi's conventions (``models/pi0.py``).

    Path and loss (pi0 Eq. 1, openpi's time direction: t = 1 is noise, t = 0 the data): for a normalized chunk
    A (B, H, A_dim), noise eps ~ N(0, I) and t ~ Beta(1.5, 1) * 0.999 + 0.001 (openpi ``sample_time``, which puts
    more weight on noisy times), x_t = t * eps + (1 - t) * A; the network's velocity v(x_t, t | o) regresses
    u = eps - A with a mean squared error over the valid chunk steps. Inference integrates dx/dt = v from t = 1
    (x_1 = eps) to t = 0 with ``num_steps`` Euler steps of dt = -1 / K (pi0: K = 10).

    Network: the H*A_dim hidden states of one chunk step (concatenated, as the L1 head) are projected once to the
    condition c_h (B, H, W); each velocity call adds the projected noisy action of that step, the projected whole
    noisy chunk (so steps see each other's noise) and an MLP of the sine-cosine time embedding, then runs
    ``num_blocks`` MLP-ResNet blocks and a LayerNorm + Linear to (B, H, A_dim). Only this small network runs K
    times; the VLA runs once per chunk.

    Args:
        llm_dim: D, hidden size of the LLM.
        hidden_dim: W, width of the expert.
        action_dim, chunk_size: A_dim and H.
        num_blocks: residual blocks.
        num_steps: K, Euler steps at inference (>= 1).
        time_dim: width of the time embedding (even).
    """

    def __init__(
        self,
        llm_dim: int,
        hidden_dim: int,
        action_dim: int,
        chunk_size: int,
        num_blocks: int = 2,
        num_steps: int = 10,
        time_dim: int = 64,
    ) -> None:
        super().__init__()
        if num_steps < 1:
            raise ValueError(f"FlowMatchingActionHead: num_steps must be >= 1, got {num_steps}")
        self.chunk_size, self.action_dim, self.num_steps, self.time_dim = chunk_size, action_dim, num_steps, time_dim
        self.condition = nn.Sequential(nn.LayerNorm(llm_dim * action_dim), nn.Linear(llm_dim * action_dim, hidden_dim))
        self.action_in = nn.Linear(action_dim, hidden_dim)
        self.chunk_in = nn.Linear(chunk_size * action_dim, hidden_dim)
        self.time_mlp = nn.Sequential(nn.Linear(time_dim, hidden_dim), nn.SiLU(), nn.Linear(hidden_dim, hidden_dim))
        self.blocks = nn.ModuleList([MLPResNetBlock(hidden_dim) for _ in range(num_blocks)])
        self.norm = nn.LayerNorm(hidden_dim)
        self.out = nn.Linear(hidden_dim, action_dim)

    def cond(self, hidden: torch.Tensor) -> torch.Tensor:
        """(B, H*A_dim, D) action hidden states -> (B, H, W) condition (computed once per chunk)."""
        b = hidden.shape[0]
        return self.condition(hidden.reshape(b, self.chunk_size, -1).to(self.out.weight.dtype))

    def velocity(self, cond: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """v(x_t, t | o): cond (B, H, W), x_t (B, H, A_dim), t (B,) -> (B, H, A_dim)."""
        dtype = self.out.weight.dtype
        x_t = x_t.to(dtype)
        h = cond + self.action_in(x_t) + self.chunk_in(x_t.flatten(1))[:, None]
        h = torch.relu(h + self.time_mlp(time_embedding(t, self.time_dim).to(dtype))[:, None])
        for block in self.blocks:
            h = block(h)
        return self.out(self.norm(h))

    def loss(
        self, hidden: torch.Tensor, actions: torch.Tensor, step_mask: torch.Tensor, generator=None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Flow-matching loss (masked mean squared error of v - u over valid steps) and the one-step estimate of
        the clean chunk, x_t - t * v (B, H, A_dim) float32, for training metrics. ``generator`` draws t and eps
        (default: torch's global RNG)."""
        b, dev = actions.shape[0], actions.device
        actions = actions.float()
        beta = torch.distributions.Beta(torch.tensor(1.5, device=dev), torch.tensor(1.0, device=dev))
        if generator is None:
            t = beta.sample((b,)) * 0.999 + 0.001
            eps = torch.randn(actions.shape, device=dev)
        else:  # Beta by inverse CDF of Beta(1.5, 1): F(x) = x^1.5, so x = u^(1/1.5)
            t = torch.rand(b, device=dev, generator=generator) ** (1 / 1.5) * 0.999 + 0.001
            eps = torch.randn(actions.shape, device=dev, generator=generator)
        x_t = t[:, None, None] * eps + (1 - t[:, None, None]) * actions
        v = self.velocity(self.cond(hidden), x_t, t).float()
        err = ((v - (eps - actions)) ** 2).mean(-1)  # (B, H)
        mask = step_mask.to(err.dtype)
        loss = (err * mask).sum() / mask.sum().clamp(min=1.0)
        return loss, (x_t - t[:, None, None] * v).detach()

    @torch.no_grad()
    def sample(self, hidden: torch.Tensor, num_steps: int | None = None, seed: int = 0) -> torch.Tensor:
        """Integrate from noise to a chunk: (B, H*A_dim, D) -> (B, H, A_dim) float32 normalized.

        The noise comes from a generator seeded with ``seed`` and is shared by all batch rows, so a row's chunk
        depends only on its own inputs and the seed (not on the batch it is in): the policy is deterministic.
        """
        k = num_steps or self.num_steps
        b, dev = hidden.shape[0], hidden.device
        gen = torch.Generator(device=dev).manual_seed(int(seed))
        x = torch.randn((1, self.chunk_size, self.action_dim), generator=gen, device=dev).expand(b, -1, -1)
        cond = self.cond(hidden)
        for i in range(k):
            t = torch.full((b,), 1.0 - i / k, device=dev)
            x = x - self.velocity(cond, x, t).float() / k
        return x.float()


def make_action_head(config) -> nn.Module | None:
    """The action head of a :class:`policies.openvla.config.VLAConfig`: L1 (OFT), flow matching, or None for the
    tokens head (the LLM's lm_head predicts action tokens)."""
    d = config.llm.hidden_size
    if config.action_head == "l1":
        return L1RegressionActionHead(
            d, config.head_hidden, config.action_dim, config.chunk_size, config.action_head_blocks
        )
    if config.action_head == "flow":
        return FlowMatchingActionHead(
            d, config.head_hidden, config.action_dim, config.chunk_size, config.action_head_blocks, config.flow_steps
        )
    return None


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
