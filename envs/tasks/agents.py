"""The low-poly ``panda_wristcam`` agent, registered with ManiSkill's ``register_agent`` (see ``envs.visuals``).

Same class as ManiSkill's ``PandaWristCam`` (controllers, keyframes, wrist camera on ``camera_link``) with
``urdf_path`` pointing at the URDF whose visual meshes are decimated; collision meshes, joints, inertials and the
SRDF are the stock ones.
"""

from __future__ import annotations

from mani_skill.agents.registration import register_agent
from mani_skill.agents.robots.panda.panda_wristcam import PandaWristCam

from envs.visuals import LOWPOLY_ROBOT_UID, lowpoly_urdf


@register_agent()
class PandaWristCamLowPoly(PandaWristCam):
    """``panda_wristcam`` with low-poly visual meshes (``envs/assets/panda_lowpoly``)."""

    uid = LOWPOLY_ROBOT_UID

    @property
    def urdf_path(self) -> str:  # read by BaseAgent._load_articulation and the IK controllers
        return str(lowpoly_urdf())
