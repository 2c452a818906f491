"""Task classes; importing this package registers them with ManiSkill's ``register_env``."""

from envs.tasks import agents, lift_bar, pick_color, place_shoe, stock  # noqa: F401
