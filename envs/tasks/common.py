"""What every dual-arm task shares: the four named cameras and the privileged-state hook.

Every task is a ManiSkill ``BaseEnv`` with two ``panda_wristcam`` arms on ManiSkill's ``TableSceneBuilder`` (left
arm = agent 0 at y = -0.75 m, right arm = agent 1 at y = +0.75 m). :class:`DualArmCamerasMixin` adds the scene
cameras ``head`` and ``low``; the wrist cameras are the agents' own ``hand_camera`` sensors. All four are created
at the same square size; the env wrapper renders only the ones it was asked for. It also picks the arms' visual
meshes (``visual_quality``, see ``envs.visuals``).
"""

from __future__ import annotations

import numpy as np
import torch
from mani_skill.sensors.camera import CameraConfig
from mani_skill.utils import sapien_utils
from mani_skill.utils.registration import register_env

HEAD_EYE, HEAD_TARGET, HEAD_FOV_DEG = (0.30, 0.0, 0.60), (-0.12, 0.0, 0.0), 75.0
"""Head camera: above the table's front edge looking down at the shared workspace (m, m, degrees)."""
LOW_EYE, LOW_TARGET, LOW_FOV_DEG = (0.50, 0.0, 0.22), (-0.10, 0.0, 0.10), 65.0
"""Low camera: near table height in front of the workspace, looking across it."""
CAMERA_NEAR, CAMERA_FAR = 0.01, 10.0


def register_task(name: str):
    """Class decorator: ManiSkill's ``register_env`` with the id and step limit of ``envs.specs.TASKS[name]``."""
    from envs.specs import get_task

    spec = get_task(name)
    return register_env(spec.env_id, max_episode_steps=spec.max_episode_steps)


WRIST_CAMERAS: dict[str, int] = {"left_wrist": 0, "right_wrist": 1}
"""Wrist camera name -> index of the agent whose ``hand_camera`` it is."""


def sensor_uid(env, camera: str) -> str:
    """ManiSkill sensor uid of ``camera`` in ``env`` (a task built on this mixin): ``head``/``low``, or
    ``{agent uid}-{i}-hand_camera`` as ManiSkill's MultiAgent names the wrist cameras."""
    if camera in WRIST_CAMERAS:
        i = WRIST_CAMERAS[camera]
        return f"{env.agent.agents[i].uid}-{i}-hand_camera"
    return camera


class DualArmCamerasMixin:
    """Mixin placed before a ManiSkill task class: adds ``head``/``low`` cameras and sizes every camera.

    Extra constructor arguments: ``image_size`` (int, px, default 256) -- the side of every camera image;
    ``visual_quality`` ("fast" | "full", default "fast") -- low-poly or stock arm visuals (``envs.visuals``).
    Subclasses must implement :meth:`privileged_state`.
    """

    def __init__(self, *args, image_size: int = 256, visual_quality: str = "fast", **kwargs):
        from envs.visuals import check_visual_quality

        self.image_size = int(image_size)
        self.visual_quality = check_visual_quality(visual_quality)
        sensor_configs = dict(kwargs.pop("sensor_configs", None) or {})
        sensor_configs.setdefault("width", self.image_size)
        sensor_configs.setdefault("height", self.image_size)
        super().__init__(*args, sensor_configs=sensor_configs, **kwargs)

    @property
    def _default_sensor_configs(self):
        head = sapien_utils.look_at(list(HEAD_EYE), list(HEAD_TARGET))
        low = sapien_utils.look_at(list(LOW_EYE), list(LOW_TARGET))
        size = self.image_size
        return [
            CameraConfig("head", head, size, size, np.deg2rad(HEAD_FOV_DEG), CAMERA_NEAR, CAMERA_FAR),
            CameraConfig("low", low, size, size, np.deg2rad(LOW_FOV_DEG), CAMERA_NEAR, CAMERA_FAR),
        ]

    def _load_agent(self, options: dict, *args, **kwargs):
        """Load the arms as the agent class of ``visual_quality``. ``self.robot_uids`` keeps the stock uids outside
        this call because ManiSkill's ``TableSceneBuilder.initialize`` recognises the dual-Panda layout by them
        (the low-poly agent is the same robot)."""
        from envs.visuals import robot_uid

        stock = self.robot_uids
        uids = stock if isinstance(stock, tuple) else (stock,)
        self.robot_uids = tuple(robot_uid(u, self.visual_quality) for u in uids)
        try:
            super()._load_agent(options, *args, **kwargs)
        finally:
            self.robot_uids = stock

    @property
    def left_agent(self):
        """The left arm (agent 0, base at y = -0.75 m)."""
        return self.agent.agents[0]

    @property
    def right_agent(self):
        """The right arm (agent 1, base at y = +0.75 m)."""
        return self.agent.agents[1]

    def privileged_state(self) -> dict[str, torch.Tensor]:
        """Simulator state the scripted expert plans from: name -> (B, ...) tensor (poses as [x,y,z,qw,qx,qy,qz])."""
        raise NotImplementedError

    def instruction_fields(self) -> list[dict[str, str]]:
        """Per sub-env values for ``{placeholders}`` in instruction templates (default: none)."""
        return [{} for _ in range(self.num_envs)]
