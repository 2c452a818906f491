"""The policy protocol, the observation contract and the policy registry.

Every policy -- the scripted expert, replay, random, a trained VLA checkpoint -- is used the same way:

    policy = make_policy("checkpoint:runs/x/checkpoints/last")
    check_compatible(policy.metadata, env_metadata)      # before the first episode
    policy.reset()                                       # at the start of every episode
    chunk = policy.predict_action_chunk(obs)             # (B, H, 14) float32, env units

Chunk execution (open loop, temporal ensembling) is the harness's job, not the policy's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from common.names import unknown_name_error
from envs.layout import ACTION_DIM, ACTION_LAYOUT, CAMERAS, CONTROL_MODE


@dataclasses.dataclass(frozen=True)
class Observation:
    """One batched observation, as every dual-arm env wrapper returns it.

    Attributes:
        images: camera name (one of ``envs.layout.CAMERAS``) -> (B, H, W, 3) uint8 RGB. Only the cameras the env
            was asked to render are present.
        proprio: (B, 14) float32 measured TCP pose + gripper per arm, same layout/units as the action
            (see ``envs.layout``).
        instruction: B natural-language task instructions.
        privileged: simulator state (object poses, goals, ...) name -> (B, ...) float array. Only the scripted
            expert reads it; learned policies must not.
    """

    images: Mapping[str, np.ndarray]
    proprio: np.ndarray
    instruction: Sequence[str]
    privileged: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)

    @property
    def batch_size(self) -> int:
        """B, the number of parallel environments this observation covers."""
        return int(self.proprio.shape[0])


@dataclasses.dataclass(frozen=True)
class PolicyMetadata:
    """What a policy expects of the environment; checked against the env before the first episode.

    Attributes:
        name: human-readable policy name (recorded in results).
        cameras: camera names the policy reads, in the order it uses them (empty: none).
        chunk_size: H, the number of actions per predicted chunk.
        action_dim: A, 14 for every dual-arm task.
        action_layout: names of the action dimensions (``envs.layout.ACTION_LAYOUT``).
        control_mode: the controller the actions are meant for (``pd_ee_pose``).
        image_size: square image side (px) the policy was trained on, or None when it does not care. The env
            renders at this size when the harness is not told otherwise.
        uses_privileged_state: True only for the scripted expert.
        tasks: tasks the policy was trained on; empty means any task.
        weights_digest: SHA-256 identity of the policy's weights
            (``policies.openvla.run_format.checkpoint_digest``), or None for policies without weights; a resumed
            benchmark must roll out the same weights.
        checkpoint_path: the resolved checkpoint directory the weights came from, or None.
        trained_visual_quality: the simulator visual qualities (``envs.visuals``: fast | full) of the frames the
            policy was trained on; empty when unknown. The harness warns when a run renders another.
        extra: anything else worth recording for people (norm mode, device, dtype, ...); the harness reads
            none of it.
    """

    name: str
    cameras: tuple[str, ...] = ()
    chunk_size: int = 1
    action_dim: int = ACTION_DIM
    action_layout: tuple[str, ...] = ACTION_LAYOUT
    control_mode: str = CONTROL_MODE
    image_size: int | None = None
    uses_privileged_state: bool = False
    tasks: tuple[str, ...] = ()
    weights_digest: str | None = None
    checkpoint_path: str | None = None
    trained_visual_quality: tuple[str, ...] = ()
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = [c for c in self.cameras if c not in CAMERAS]
        if unknown:
            raise ValueError(f"PolicyMetadata.cameras: unknown camera(s) {unknown}; known: {list(CAMERAS)}")
        if self.chunk_size < 1:
            raise ValueError(f"PolicyMetadata.chunk_size must be >= 1, got {self.chunk_size}")
        if len(self.action_layout) != self.action_dim:
            raise ValueError(
                f"PolicyMetadata: action_layout has {len(self.action_layout)} names for action_dim {self.action_dim}"
            )


@dataclasses.dataclass(frozen=True)
class EnvMetadata:
    """What an environment offers, in the terms :func:`check_compatible` compares."""

    task: str
    cameras: tuple[str, ...]
    image_size: int
    action_dim: int = ACTION_DIM
    action_layout: tuple[str, ...] = ACTION_LAYOUT
    control_mode: str = CONTROL_MODE


class PolicyMismatchError(ValueError):
    """A policy and an environment disagree on cameras, action layout or control mode."""


def check_compatible(policy: PolicyMetadata, env: EnvMetadata) -> None:
    """Raise :class:`PolicyMismatchError` listing every convention the policy and env disagree on.

    Never pads or truncates: a policy that needs a camera the env does not render, a different action layout or
    control mode, or another image size is an error before any episode runs.
    """
    problems = []
    missing = [c for c in policy.cameras if c not in env.cameras]
    if missing:
        problems.append(
            f"cameras {missing} needed by the policy are not rendered by the env (env has {list(env.cameras)})"
        )
    if policy.action_dim != env.action_dim:
        problems.append(f"action_dim: policy {policy.action_dim} vs env {env.action_dim}")
    elif tuple(policy.action_layout) != tuple(env.action_layout):
        diff = [f"{i}: {p} vs {e}" for i, (p, e) in enumerate(zip(policy.action_layout, env.action_layout)) if p != e]
        problems.append(f"action_layout differs at {diff}")
    if policy.control_mode != env.control_mode:
        problems.append(f"control_mode: policy {policy.control_mode!r} vs env {env.control_mode!r}")
    if policy.image_size is not None and policy.cameras and policy.image_size != env.image_size:
        problems.append(f"image_size: policy trained at {policy.image_size} px, env renders {env.image_size} px")
    if policy.tasks and env.task not in policy.tasks:
        problems.append(f"task {env.task!r} is not one the policy was trained on ({list(policy.tasks)})")
    if problems:
        raise PolicyMismatchError(f"policy {policy.name!r} does not fit task {env.task!r}: " + "; ".join(problems))


@runtime_checkable
class Policy(Protocol):
    """A policy maps a batched :class:`Observation` to a chunk of absolute 14-D actions.

    Implementations keep per-episode state only between ``reset()`` calls and never mutate the observation.
    """

    metadata: PolicyMetadata

    def reset(self) -> None:
        """Forget all per-episode state. Called before every episode."""

    def predict_action_chunk(self, obs: Observation) -> np.ndarray:
        """Return a (B, H, A) float32 chunk of actions in env units (H = metadata.chunk_size)."""


PolicyFactory = Callable[[str | None], Policy]
_REGISTRY: dict[str, PolicyFactory] = {}
_USAGE: dict[str, str] = {}


def register_policy(name: str, usage: str | None = None) -> Callable[[PolicyFactory], PolicyFactory]:
    """Decorator: register ``factory(arg)`` under ``name``; ``make_policy("name:arg")`` calls it with ``arg``.
    ``usage`` is the spec as users write it (e.g. ``replay:DIR``), shown in ``vla bench --help``."""

    def deco(factory: PolicyFactory) -> PolicyFactory:
        if name in _REGISTRY:
            raise ValueError(f"policy {name!r} registered twice")
        _REGISTRY[name] = factory
        _USAGE[name] = usage or name
        return factory

    return deco


def _load_builtin_policies() -> None:
    # Imported for their @register_policy side effect; kept lazy so `import policies` stays light.
    import importlib

    for module in ("policies.baselines", "policies.checkpoint", "policies.serving.remote"):
        importlib.import_module(module)


def available_policies() -> list[str]:
    """Names of every registered policy kind."""
    _load_builtin_policies()
    return sorted(_REGISTRY)


def policy_usages() -> list[str]:
    """How each registered policy kind is written (``checkpoint:PATH``, ``replay:DIR``, ...), sorted by name."""
    _load_builtin_policies()
    return [_USAGE[name] for name in sorted(_REGISTRY)]


def make_policy(spec: str, **kwargs: Any) -> Policy:
    """Build a policy from ``"name"`` or ``"name:argument"`` (e.g. ``replay:data/pick``, ``checkpoint:RUN/last``).

    Raises:
        ValueError: unknown name; the message lists the known ones and the closest match.
    """
    _load_builtin_policies()
    name, _, arg = spec.partition(":")
    if name not in _REGISTRY:
        raise unknown_name_error("policy", name, _REGISTRY)
    return _REGISTRY[name](arg or None, **kwargs)
