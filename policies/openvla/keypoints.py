"""Spatial-softmax keypoints: one extra LLM token per view that carries image coordinates (``VLAConfig.keypoints``).

A small conv net maps each view's pixels to K feature maps at half resolution; a spatial softmax turns each map
into the expected (x, y) of its activation (Levine, Finn, Darrell & Abbeel 2016, "End-to-End Training of Deep
Visuomotor Policies", JMLR 17; robomimic ``models/base_nets.SpatialSoftmax``). The 2K coordinates are projected
to one LLM token per view (fc1 2K->D, GELU, fc2 D->D, as ``heads.ProprioProjector``).

Why (#13): the from-scratch tiny ViT reads a 5 cm cube as part of one 16 px patch and closes the gripper near the
mean layout point (``benchmarks.probe_grasp``'s localization slopes 0.0-0.5). A keypoint is a position by
construction: a channel that fires on a colour gives that blob's centroid to sub-pixel precision.
Not part of OpenVLA: it is trained fully with the heads and has no OpenVLA-format file.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

INIT_TEMPERATURE = 0.05
"""Initial softmax temperature. Measured in #13: at 1.0 the freshly initialised maps (logits ~0.3 apart) give a
near-flat softmax over the 64 x 64 positions, and after 3000 steps at lr 1e-4 the keypoints still moved by
0.001-0.05 across episodes (a blob of 20 of 4096 positions needs logits ~6 above the rest to dominate)."""


def spatial_softmax(features: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
    """Expected image coordinates of each channel's softmax over positions.

    Args:
        features: (B, K, H, W) float maps.
        temperature: scalar > 0; the softmax is over ``features / temperature``.

    Returns:
        (B, K, 2) float: (x, y) in [-1, 1], x along W (left -1, right +1), y along H (top -1, bottom +1), pixel
        centres at ``linspace(-1, 1, n)``.
    """
    b, k, h, w = features.shape
    weights = F.softmax(features.reshape(b, k, h * w).float() / temperature.float(), dim=-1).reshape(b, k, h, w)
    xs = torch.linspace(-1.0, 1.0, w, device=features.device)
    ys = torch.linspace(-1.0, 1.0, h, device=features.device)
    x = (weights.sum(2) * xs).sum(-1)  # (B, K): marginal over rows, then expectation along W
    y = (weights.sum(3) * ys).sum(-1)
    return torch.stack([x, y], dim=-1).to(features.dtype)


class KeypointEncoder(nn.Module):
    """Pixels of V views -> V keypoint tokens (B, V, D).

    Conv (3 + 2)->C (5x5, stride 2) + ReLU, conv C->C (3x3) + ReLU, conv C->K (1x1) at S/2 x S/2, spatial softmax
    with a learned temperature (init :data:`INIT_TEMPERATURE`), then fc1 2K->D, GELU, fc2 D->D. No buffers (every
    tensor is a parameter, so ``lora.load_heads`` can copy it).

    The first conv also sees two coordinate channels (x, y in [-1, 1]; CoordConv, Liu et al. 2018): a conv alone is
    translation-equivariant, so a channel that fires on "cube" fires on both cubes and its keypoint lands between
    them; with coordinates it can fire on "cube in the left half" only. Measured in #13 (keypoints + readout
    trained alone on 1000 side-task demos, 1500 steps, 200 held-out demos): next-grasp x, y error 1.10, 1.64 cm
    with coordinates, 1.37, 1.76 cm without, 2.06, 2.44 cm blind (the training-set mean).

    With ``keypose_views`` > 0 it also has ``readout`` (2K * V -> 128, ReLU, 128 -> 6): each arm's next keypose
    (normalized x, y, z of the left then the right arm) from the keypoints of all V views, the auxiliary target of
    ``VLAConfig.keypose_aux``; trained only, never used to act.

    Args:
        num_keypoints: K >= 1.
        llm_dim: D.
        channels: C, width of the two conv layers.
        keypose_views: V of the keypose readout; 0 = no readout.
    """

    def __init__(self, num_keypoints: int, llm_dim: int, channels: int = 16, keypose_views: int = 0) -> None:
        super().__init__()
        if num_keypoints < 1 or channels < 1 or keypose_views < 0:
            raise ValueError(
                f"KeypointEncoder: num_keypoints {num_keypoints} and channels {channels} must be >= 1, "
                f"keypose_views {keypose_views} >= 0"
            )
        self.conv = nn.Sequential(
            nn.Conv2d(3 + 2, channels, 5, stride=2, padding=2),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(channels, num_keypoints, 1),
        )
        self.log_temperature = nn.Parameter(torch.full((), math.log(INIT_TEMPERATURE)))
        self.fc1 = nn.Linear(2 * num_keypoints, llm_dim)
        self.act_fn1 = nn.GELU()
        self.fc2 = nn.Linear(llm_dim, llm_dim)
        self.readout = None
        if keypose_views:
            width = 2 * num_keypoints * keypose_views
            self.readout = nn.Sequential(nn.Linear(width, 128), nn.ReLU(), nn.Linear(128, 6))

    def keypoints(self, pixels: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) normalized RGB -> (N, K, 2) keypoints (x, y) in [-1, 1]."""
        n, _, h, w = pixels.shape
        xs = torch.linspace(-1.0, 1.0, w, device=pixels.device, dtype=pixels.dtype).expand(n, 1, h, w)
        ys = torch.linspace(-1.0, 1.0, h, device=pixels.device, dtype=pixels.dtype)[:, None].expand(n, 1, h, w)
        return spatial_softmax(self.conv(torch.cat([pixels, xs, ys], dim=1)), self.log_temperature.exp())

    def view_keypoints(self, pixel_values: torch.Tensor, channels_per_view: int) -> torch.Tensor:
        """(B, V * C, S, S) processor pixels (each view's first 3 channels are used) -> (B, V, 2K) keypoints.

        Raises:
            ValueError: the channel count is not a multiple of ``channels_per_view``.
        """
        b, c, s, _ = pixel_values.shape
        if c % channels_per_view:
            raise ValueError(f"pixel_values has {c} channels; expected a multiple of {channels_per_view}")
        v = c // channels_per_view
        pixels = pixel_values.reshape(b * v, channels_per_view, s, s)[:, :3]
        return self.keypoints(pixels).reshape(b, v, -1)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        """(B, V, 2K) keypoints from :meth:`view_keypoints` -> (B, V, D) LLM tokens."""
        return self.fc2(self.act_fn1(self.fc1(points)))

    def keypose_loss(self, points: torch.Tensor, keypose: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Masked L1 of the readout's keyposes: points (B, V, 2K), keypose (B, 2, 3) normalized, mask (B, 2) bool
        (False: that arm closes no more in the episode). Returns a float32 scalar (0 when nothing is unmasked).

        Raises:
            RuntimeError: the encoder was built without a readout (``keypose_views=0``).
        """
        if self.readout is None:
            raise RuntimeError("KeypointEncoder.keypose_loss: built without a readout (keypose_views=0)")
        pred = self.readout(points.reshape(points.shape[0], -1)).float().reshape(-1, 2, 3)
        w = mask.to(pred.dtype)[..., None].expand_as(pred)
        return ((pred - keypose.float()).abs() * w).sum() / w.sum().clamp(min=1.0)


def make_keypoint_encoder(config) -> KeypointEncoder | None:
    """The encoder a ``VLAConfig`` asks for (None when ``keypoints`` is 0), with a readout if ``keypose_aux``."""
    if not config.keypoints:
        return None
    views = len(config.cameras) if config.keypose_aux else 0
    return KeypointEncoder(config.keypoints, config.llm.hidden_size, keypose_views=views)
