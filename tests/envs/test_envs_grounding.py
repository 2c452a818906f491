"""DualArmPickColorCube-v1, the language-grounding task: the goal is drawn independently of the layout, the
``goal`` reset option fixes it without moving anything, the instruction names it, and the expert lifting the
instructed cube succeeds while lifting the other one is scored as `other_lifted`, not success. The same for
DualArmPickSideCube-v1, whose instruction names the side instead of the colour."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.maniskill
TASK = "DualArmPickColorCube-v1"


@pytest.fixture(scope="module")
def env():
    from envs.wrapper import make_env

    env = make_env(TASK, cameras=(), max_episode_steps=100)
    yield env
    env.close()


def _cube_positions(env) -> dict:
    cubes = env.env.unwrapped.cubes
    return {name: cube.pose.p.numpy().copy() for name, cube in cubes.items()}


def test_goal_and_colour_sides_are_independent_draws(env) -> None:
    combos = set()
    for seed in range(24):
        obs, _ = env.reset(seed=seed)
        goal_red = bool(obs["privileged"]["goal_red"][0, 0] > 0.5)
        red_left = bool(_cube_positions(env)["red"][0, 1] < 0)
        assert ("red" if goal_red else "blue") in obs["instruction"][0]
        combos.add((goal_red, red_left))
    assert combos == {(a, b) for a in (True, False) for b in (True, False)}, "all four goal x layout cases occur"


def test_the_goal_option_changes_only_the_goal(env) -> None:
    _, _ = env.reset(seed=5, options={"goal": "red"})
    red_layout, red_obs = _cube_positions(env), env.reset(seed=5, options={"goal": "red"})[0]
    blue_obs, _ = env.reset(seed=5, options={"goal": "blue"})
    blue_layout = _cube_positions(env)
    for name in red_layout:
        np.testing.assert_array_equal(red_layout[name], blue_layout[name])
    assert "red" in red_obs["instruction"][0] and "blue" in blue_obs["instruction"][0]
    assert red_obs["privileged"]["side"][0, 0] == -blue_obs["privileged"]["side"][0, 0], "the other arm's side"
    with pytest.raises(ValueError, match="must be one of"):
        env.reset(seed=5, options={"goal": "green"})


def _run(env, expert, seed: int, options: dict) -> dict:
    obs, info = env.reset(seed=seed, options=options)
    expert.reset()
    for _ in range(100):
        single = {
            "privileged": {k: np.asarray(v)[0] for k, v in obs["privileged"].items()},
            "proprio": obs["proprio"][0],
        }
        obs, _, _, _, info = env.step(expert.act(single)[None])
    return {k: bool(np.asarray(v).reshape(-1)[0]) for k, v in info.items() if k in ("success", "other_lifted")}


def test_lifting_the_other_cube_is_not_success(env) -> None:
    from envs.experts import make_expert

    expert = make_expert(TASK)
    told_red = _run(env, expert, 7, {"goal": "red"})
    assert told_red == {"success": True, "other_lifted": False}
    # Score the same end state against the instruction "blue": the red cube is up, so the other goal was done.
    unwrapped = env.env.unwrapped
    unwrapped.goal_red[:] = False
    info = unwrapped.evaluate()
    assert bool(info["other_lifted"][0]) and not bool(info["success"][0]) and not bool(info["target_lifted"][0])


@pytest.fixture(scope="module")
def side_env():
    from envs.wrapper import make_env

    env = make_env("DualArmPickSideCube-v1", cameras=(), max_episode_steps=100)
    yield env
    env.close()


def test_the_side_task_names_the_side_and_keeps_the_colours_random(side_env) -> None:
    combos = set()
    for seed in range(24):
        obs, _ = side_env.reset(seed=seed)
        side = "left" if obs["privileged"]["side"][0, 0] < 0 else "right"
        assert side in obs["instruction"][0] and "red" not in obs["instruction"][0]
        target_y = obs["privileged"]["target_pose"][0, 1]
        assert (target_y < 0) == (side == "left"), "the instructed cube lies on the named side"
        combos.add((side, bool(_cube_positions(side_env)["red"][0, 1] < 0)))
    assert combos == {(s, r) for s in ("left", "right") for r in (True, False)}, "side and colours independent"
    left_obs = side_env.reset(seed=3, options={"goal": "left"})[0]
    layout = _cube_positions(side_env)
    right_obs = side_env.reset(seed=3, options={"goal": "right"})[0]
    for name, pos in _cube_positions(side_env).items():
        np.testing.assert_array_equal(pos, layout[name])
    assert left_obs["privileged"]["side"][0, 0] == -1 and right_obs["privileged"]["side"][0, 0] == 1
    with pytest.raises(ValueError, match=r"DualArmPickSideCube: options\['goal'\] must be one of \('left', 'right'\)"):
        side_env.reset(seed=3, options={"goal": "red"})


def test_the_expert_lifts_the_named_side(side_env) -> None:
    from envs.experts import make_expert

    expert = make_expert("DualArmPickSideCube-v1")
    for goal in ("left", "right"):
        assert _run(side_env, expert, 4, {"goal": goal}) == {"success": True, "other_lifted": False}
