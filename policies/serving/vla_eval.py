"""Our policies as a vla-eval model server (allenai's vla-evaluation-harness, PyPI ``vla-eval``; optional extra).

    pip install '.[vla-eval]'
    python -m policies.serving.vla_eval --args.policy checkpoint:runs/x/checkpoints/last --address 127.0.0.1:8000
    vla-eval run --config EVAL.yaml --server-url ws://127.0.0.1:8000

vla-eval speaks its own protocol (``vla_eval/protocol/messages.py``: msgpack messages HELLO, EPISODE_START,
OBSERVATION, ACTION, EPISODE_END, ERROR) and drives a ``ModelServer``; :class:`HarnessModelServer` is a
``PredictModelServer`` (``vla_eval/model_servers/predict.py``) around any policy spec of ours, so vla-eval's
``serve`` / ``run_server`` (``vla_eval/model_servers/serve.py``) host it unchanged.

Observations (vla-eval's convention, ``vla_eval/types.py``): ``images`` camera -> (H, W, 3) uint8, the
instruction in ``task_description``, the state in ``state``. Camera names may be ours (``head``, ...), openpi's
ALOHA names (``cam_high``, ...) or RoboTwin's as vla-eval's RoboTwin benchmark sends them (``head_camera``,
``left_camera``, ``right_camera``); they are mapped to ours and validated by ``policies.serving.keys``
(resize to the policy's image size, CHW accepted). The state must be our 14-D TCP layout (``envs.layout``).

Replies: ``{"actions": (H, 14) float32}``; vla-eval's chunk buffer (``chunk_size`` = H by default) then hands
out one action per observation and re-queries when it is empty, and ``max_batch_size > 1`` batches concurrent
sessions through :meth:`HarnessModelServer.predict_batch`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

try:
    from vla_eval.model_servers.base import SessionContext
    from vla_eval.model_servers.predict import PredictModelServer
    from vla_eval.specs import IMAGE_RGB, LANGUAGE, DimSpec
except ImportError as err:  # the optional extra is not installed
    raise ImportError(f"policies.serving.vla_eval needs vla-eval: pip install '.[vla-eval]' ({err})") from err

from policies.base import make_policy
from policies.serving.batching import merge_observations
from policies.serving.keys import ALOHA_CAMERAS, ObservationError, to_observation

ROBOTWIN_CAMERAS = {"head": "head_camera", "left_wrist": "left_camera", "right_wrist": "right_camera"}
"""Our camera name -> the name vla-eval's RoboTwin benchmark uses (``vla_eval/benchmarks/robotwin``)."""
ACTION_FORMAT = "dual_arm_abs_tcp_xyz_euler_xyz_gripper"
"""Our action convention as a vla-eval DimSpec format (absolute world-frame TCP targets, ``envs.layout``)."""


def _native_images(images: Mapping[str, Any], cameras: tuple[str, ...]) -> dict[str, Any]:
    out = {}
    for cam in cameras:
        for name in (cam, ALOHA_CAMERAS[cam], ROBOTWIN_CAMERAS.get(cam)):
            if name is not None and name in images:
                out[cam] = np.asarray(images[name])
                break
    return out


def native_request(obs: Mapping[str, Any], cameras: tuple[str, ...]) -> dict[str, Any]:
    """A vla-eval observation as our native wire map (``images`` by our camera names, ``proprio``,
    ``instruction``), ready for :func:`policies.serving.keys.to_observation`.

    Raises:
        ObservationError: no state or no instruction key.
    """
    state = next((obs[k] for k in ("state", "states", "proprio") if k in obs), None)
    if state is None:
        raise ObservationError(f"state: missing (expected a (14,) float array); got keys {sorted(obs)}")
    instruction = next((obs[k] for k in ("task_description", "instruction", "prompt") if k in obs), None)
    if instruction is None:
        raise ObservationError(f"task_description: missing (expected a string); got keys {sorted(obs)}")
    images = obs.get("images") or {}
    if not isinstance(images, Mapping):
        raise ObservationError(f"images: expected a map camera -> image, got {type(images).__name__}")
    mapped = _native_images(images, cameras)
    missing = [c for c in cameras if c not in mapped]
    if missing:
        raise ObservationError(
            f"images: missing camera(s) {missing} (or their ALOHA / RoboTwin names); got {sorted(images)}"
        )
    return {"images": mapped, "proprio": np.asarray(state, dtype=np.float64), "instruction": str(instruction)}


class HarnessModelServer(PredictModelServer):
    """A policy of ours (``checkpoint:PATH``, any registered spec) behind vla-eval's PredictModelServer.

    Args:
        policy: the policy spec, e.g. ``checkpoint:runs/x/checkpoints/last``.
        chunk_size: actions per query used by vla-eval's chunk buffer (default: the policy's H).
        max_batch_size: > 1 batches concurrent sessions (vla-eval's dispatcher) into one policy call.
        max_wait_time: seconds vla-eval waits to fill a batch.

    Raises:
        ValueError: an unknown spec, or a policy that reads privileged simulator state.
    """

    def __init__(
        self, policy: str, chunk_size: int | None = None, max_batch_size: int = 1, max_wait_time: float = 0.01
    ) -> None:
        self.policy = make_policy(policy)
        meta = self.policy.metadata
        if meta.uses_privileged_state:
            raise ValueError(f"policy {meta.name!r} reads privileged simulator state: it cannot be served")
        super().__init__(
            chunk_size=chunk_size or meta.chunk_size, max_batch_size=max_batch_size, max_wait_time=max_wait_time
        )
        self.meta = meta

    def _observation(self, obs: Mapping[str, Any]):
        request = native_request(obs, tuple(self.meta.cameras))
        observation, _ = to_observation(request, self.meta.cameras, self.meta.image_size, self.meta.action_dim)
        return observation

    def predict(self, obs: dict[str, Any], ctx: SessionContext) -> dict[str, Any]:
        """One observation -> ``{"actions": (H, 14) float32}``.

        Raises:
            ObservationError: a missing camera / state / instruction or a bad shape (vla-eval sends it as ERROR).
        """
        return {"actions": self.policy.predict_action_chunk(self._observation(obs))[0]}

    def predict_batch(self, obs_batch: list[dict[str, Any]], ctx_batch: list[SessionContext]) -> list[dict[str, Any]]:
        """Observations of several sessions in one policy call -> one ``{"actions": (H, 14)}`` each.

        Raises:
            ObservationError: any observation is bad; vla-eval's dispatcher then fails every request of this batch
                (``predict.py``), so with ``max_batch_size > 1`` one bad session can fail its batch-mates' step.
        """
        merged = merge_observations([self._observation(o) for o in obs_batch])
        actions = self.policy.predict_action_chunk(merged)
        return [{"actions": a} for a in actions]

    def get_action_spec(self) -> dict[str, DimSpec]:
        """One 14-D component: absolute TCP pose + gripper per arm, left first (``envs.layout``)."""
        layout = ", ".join(self.meta.action_layout)
        return {"actions": DimSpec("actions", self.meta.action_dim, ACTION_FORMAT, description=layout)}

    def get_observation_spec(self) -> dict[str, DimSpec]:
        """The cameras the policy reads, the 14-D state and the instruction."""
        spec = {cam: IMAGE_RGB for cam in self.meta.cameras}
        spec["state"] = DimSpec("state", self.meta.action_dim, ACTION_FORMAT)
        spec["language"] = LANGUAGE
        return spec


def main() -> None:
    """``python -m policies.serving.vla_eval --args.policy SPEC [--address HOST:PORT]`` (vla-eval's run_server).

    vla-eval binds 0.0.0.0 by default; like ``vla serve`` this entry point binds 127.0.0.1 unless ``--address`` or
    ``--host`` says otherwise (run_server parses ``sys.argv`` itself, so the default is added there).
    """
    import sys

    from vla_eval.model_servers.serve import run_server

    if not any(a.split("=", 1)[0] in ("--address", "--host") for a in sys.argv[1:]):
        sys.argv.extend(["--host", "127.0.0.1"])
    run_server(HarnessModelServer)


if __name__ == "__main__":
    main()
