"""`vla demos`: record successful scripted-expert episodes in the seed HDF5 layout.

Episode file ``episode_{i}.hdf5`` (T control steps at 20 Hz; row t is the observation *before* action t):

========================  ==================  =======  ==================================================
key                       shape               dtype    meaning
========================  ==================  =======  ==================================================
head_camera_image         (T, S, S, 3)        uint8    head camera RGB (only recorded cameras are present)
left_wrist_image          (T, S, S, 3)        uint8    left wrist camera RGB
right_wrist_image         (T, S, S, 3)        uint8    right wrist camera RGB
low_cam_image             (T, S, S, 3)        uint8    low front camera RGB
action                    (T, 14)             float64  absolute targets, per arm [x,y,z,roll,pitch,yaw,grip]
relative_action           (T, 14)             float64  action[t+1] - action[t], last row repeated
proprio                   (T, 14)             float64  measured TCP pose + gripper, same layout as action
seen                      (n,)                str      seen instruction phrasings of this episode
unseen                    (m,)                str      held-out phrasings of this episode
========================  ==================  =======  ==================================================

Attributes: task, seed, control_mode, action_layout (JSON list), action_frame, cameras (JSON list), image_size,
control_freq (Hz), sim_freq (Hz), instruction (the phrasing the env showed), num_steps, package_versions (JSON),
format_version, success, expert, action_noise, noise_correlation, visual_quality (fast | full: the arm meshes
the cameras saw, ``envs.visuals``). Images are stored one frame per HDF5 chunk with LZF compression (lossless;
reading one frame decompresses one chunk). Frames, actions and proprio follow ``envs.layout``.

The folder also gets ``dataset.json``: task, cameras, image size, visual quality, the episode list (file, seed,
steps, instruction), attempts, failures and failed seeds. Attempt k uses seed ``seed_start + k``; a successful
attempt is written to ``.pending/seed_{seed}.hdf5`` and renamed to the next ``episode_{i}.hdf5`` in seed order
(``--workers N`` runs attempts in N processes and commits them in the same order, so the folder does not depend on
N). Every file is written to a temp name and renamed, so an interrupted run leaves only complete episodes; running
the same command again continues where it stopped.
"""

from __future__ import annotations

import datetime
import json
import os
import re
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from common.files import write_bytes_atomic, write_json_atomic
from envs.config import DemosConfig
from envs.layout import ACTION_FRAME, ACTION_LAYOUT, CAMERA_TO_HDF5_KEY, CONTROL_MODE

FORMAT_VERSION = 1
MANIFEST = "dataset.json"
_EPISODE_RE = re.compile(r"^episode_(\d+)\.hdf5$")


def package_versions() -> dict[str, str]:
    """Versions of the packages that shape recorded data (simulator, renderer, numerics)."""
    out = {}
    for name in ("vla-harness", "mani-skill", "sapien", "gymnasium", "numpy", "h5py", "torch"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def relative_actions(action: np.ndarray) -> np.ndarray:
    """(T, D) -> (T, D): ``action[t+1] - action[t]``, the last row repeated (RoboTwin export convention)."""
    rel = np.empty_like(action)
    rel[:-1] = action[1:] - action[:-1]
    rel[-1] = rel[-2] if len(action) > 1 else 0.0
    return rel


def write_episode(
    path: Path,
    frames: dict[str, np.ndarray],
    action: np.ndarray,
    proprio: np.ndarray,
    seen: list[str],
    unseen: list[str],
    attrs: dict[str, Any],
) -> None:
    """Write one episode file atomically and durably (built in memory, then ``common.files.write_bytes_atomic``).

    Args:
        frames: camera name -> (T, S, S, 3) uint8.
        action, proprio: (T, 14) float arrays.
        seen, unseen: instruction phrasings.
        attrs: scalar / str attributes (dicts and lists are stored as JSON strings).
    """
    import io

    import h5py

    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        for cam, imgs in frames.items():
            f.create_dataset(
                CAMERA_TO_HDF5_KEY[cam], data=imgs, dtype=np.uint8, chunks=(1, *imgs.shape[1:]), compression="lzf"
            )
        f.create_dataset("action", data=action.astype(np.float64))
        f.create_dataset("relative_action", data=relative_actions(action.astype(np.float64)))
        f.create_dataset("proprio", data=proprio.astype(np.float64))
        f.create_dataset("seen", data=np.array(seen, dtype=object), dtype=h5py.string_dtype())
        f.create_dataset("unseen", data=np.array(unseen, dtype=object), dtype=h5py.string_dtype())
        for key, value in attrs.items():
            f.attrs[key] = json.dumps(value) if isinstance(value, (dict, list, tuple)) else value
    write_bytes_atomic(path, buffer.getvalue())


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def load_or_start_manifest(cfg: DemosConfig) -> dict:
    """Read ``dataset.json`` (reconciled with the episode files on disk) or start a new one.

    Raises:
        ValueError: the folder holds episodes of another task, camera set or image size.
    """
    import h5py

    out = cfg.out
    for stale in out.glob("*.tmp"):
        stale.unlink()  # leftovers of an interrupted write: never complete
    path = out / MANIFEST
    fresh = {
        "format_version": FORMAT_VERSION,
        "task": cfg.task,
        "cameras": list(cfg.cameras),
        "image_size": cfg.image_size,
        "action_noise": cfg.action_noise,
        "visual_quality": cfg.visual_quality,
        "control_mode": CONTROL_MODE,
        "action_layout": list(ACTION_LAYOUT),
        "episodes": [],
        "attempts": 0,
        "failures": 0,
        "failed_seeds": [],
        "next_seed": cfg.seed_start,
        "created_at": _now(),
        "updated_at": _now(),
    }
    manifest = json.loads(path.read_text()) if path.exists() else fresh
    manifest.setdefault("action_noise", 0.0)
    manifest.setdefault("visual_quality", "full")  # folders recorded before low-poly visuals existed
    for key in ("task", "cameras", "image_size", "action_noise", "visual_quality"):
        if manifest.get(key) != fresh[key]:
            raise ValueError(
                f"{path}: folder holds {key}={manifest.get(key)!r} but this run asks for {fresh[key]!r}; "
                "use another --out or the same settings"
            )
    listed = {e["file"] for e in manifest["episodes"]}
    for file in sorted(out.glob("episode_*.hdf5"), key=lambda p: int(_EPISODE_RE.match(p.name).group(1))):
        if file.name not in listed:  # renamed into place, but the run died before updating the manifest
            with h5py.File(file, "r") as f:
                seed, steps, instr = int(f.attrs["seed"]), int(f.attrs["num_steps"]), str(f.attrs["instruction"])
            manifest["episodes"].append({"file": file.name, "seed": seed, "num_steps": steps, "instruction": instr})
            manifest["attempts"] += 1
            manifest["next_seed"] = max(manifest["next_seed"], seed + 1)
    manifest["next_seed"] = max(manifest["next_seed"], cfg.seed_start)
    return manifest


class ActionNoise:
    """AR(1) offset added to executed TCP targets (DART, Laskey et al. 2017, "DART: Noise Injection for Robust
    Imitation Learning"): offset_t = rho * offset_{t-1} + sqrt(1 - rho^2) * sigma * eps_t, eps ~ N(0, I), seeded
    per episode. sigma is ``std`` m on x, y, z and ``5 * std`` rad on yaw of both arms; grippers are untouched."""

    def __init__(self, std: float, rho: float, seed: int) -> None:
        self.scale = np.zeros(14)
        self.scale[[0, 1, 2, 7, 8, 9]] = std
        self.scale[[5, 12]] = 5.0 * std
        self.rho = rho
        self.rng = np.random.default_rng([seed, 4242])
        self.offset = self.scale * self.rng.standard_normal(14)

    def __call__(self, action: np.ndarray) -> np.ndarray:
        noisy = action + self.offset
        step = np.sqrt(1.0 - self.rho**2) * self.scale * self.rng.standard_normal(14)
        self.offset = self.rho * self.offset + step
        return noisy


def run_expert_episode(
    env, expert, seed: int, record: bool, action_noise: float = 0.0, noise_correlation: float = 0.9
) -> dict[str, Any]:
    """Roll the expert out for one seeded episode on a single-env wrapper.

    With ``action_noise > 0`` the env executes the expert's action plus an :class:`ActionNoise` offset while the
    clean action is what gets recorded.

    Returns a dict with ``success`` (bool, at the final step), ``steps``, ``success_once``, and when ``record``:
    ``frames`` (cam -> (T, S, S, 3) uint8), ``action`` (T, 14), ``proprio`` (T, 14), ``instruction``,
    ``seen`` / ``unseen`` phrasings.
    """
    obs, info = env.reset(seed=seed)
    expert.reset()
    noise = ActionNoise(action_noise, noise_correlation, seed) if action_noise > 0 else None
    frames = {c: [] for c in env.cameras}
    actions, proprio = [], []
    success_once = False
    for _ in range(env.max_episode_steps):
        single = {"privileged": {k: v[0] for k, v in obs["privileged"].items()}, "proprio": obs["proprio"][0]}
        action = expert.act(single)
        if record:
            for c in env.cameras:
                frames[c].append(obs["images"][c][0])
            actions.append(action)
            proprio.append(obs["proprio"][0])
        obs, _, _, _, info = env.step(action if noise is None else noise(action))
        success_once |= bool(info["success"][0])
        if expert.done:
            break
    result = {"success": bool(info["success"][0]), "success_once": success_once, "steps": int(env.elapsed_steps[0])}
    if record:
        result.update(
            frames={c: np.stack(v) for c, v in frames.items()},
            action=np.stack(actions),
            proprio=np.stack(proprio),
            instruction=obs["instruction"][0],
            seen=env.instruction_variants("seen")[0],
            unseen=env.instruction_variants("unseen")[0],
        )
    return result


PENDING_DIR = ".pending"
"""Sub-folder where an attempt's episode file waits (named by seed) until it is committed in seed order."""


def episode_attrs(cfg: DemosConfig, env, expert, seed: int, result: dict[str, Any], versions: dict) -> dict:
    """The HDF5 attributes of one recorded episode (see the module docstring)."""
    return {
        "task": cfg.task,
        "seed": seed,
        "control_mode": CONTROL_MODE,
        "action_layout": list(ACTION_LAYOUT),
        "action_frame": ACTION_FRAME,
        "cameras": list(cfg.cameras),
        "image_size": cfg.image_size,
        "control_freq": int(env.unwrapped.control_freq),
        "sim_freq": int(env.unwrapped.sim_freq),
        "instruction": result["instruction"],
        "num_steps": result["steps"],
        "package_versions": versions,
        "format_version": FORMAT_VERSION,
        "success": True,
        "expert": type(expert).__name__,
        "action_noise": cfg.action_noise,
        "noise_correlation": cfg.noise_correlation,
        "visual_quality": cfg.visual_quality,
    }


def make_recording_env(cfg: DemosConfig):
    """The env ``vla demos`` records with (cameras, image size, instruction split, visual quality of ``cfg``)."""
    from envs.wrapper import make_env

    return make_env(
        cfg.task,
        cameras=cfg.cameras,
        image_size=cfg.image_size,
        instruction_split=cfg.instruction_split,
        visual_quality=cfg.visual_quality,
    )


def attempt(cfg: DemosConfig, env, expert, seed: int, versions: dict) -> dict[str, Any]:
    """Run the expert on ``seed``; a successful episode is written to ``OUT/.pending/seed_{seed}.hdf5``.

    Returns ``{"seed", "success", "steps", "instruction", "pending"}`` (``pending``: the file, or None).
    """
    result = run_expert_episode(
        env, expert, seed, record=True, action_noise=cfg.action_noise, noise_correlation=cfg.noise_correlation
    )
    pending = None
    if result["success"]:
        pending = cfg.out / PENDING_DIR / f"seed_{seed}.hdf5"
        pending.parent.mkdir(exist_ok=True)
        write_episode(
            pending,
            result["frames"],
            result["action"],
            result["proprio"],
            result["seen"],
            result["unseen"],
            episode_attrs(cfg, env, expert, seed, result, versions),
        )
    return {
        "seed": seed,
        "success": result["success"],
        "steps": result["steps"],
        "instruction": result.get("instruction", ""),
        "pending": None if pending is None else str(pending),
    }


def _sequential_attempts(cfg: DemosConfig, first_seed: int):
    """Attempts of seeds first_seed, first_seed + 1, ... in this process (an infinite generator)."""
    from envs.experts import make_expert

    expert = make_expert(cfg.task)
    env = make_recording_env(cfg)
    versions = package_versions()
    try:
        seed = first_seed
        while True:
            yield attempt(cfg, env, expert, seed, versions)
            seed += 1
    finally:
        env.close()


_WORKER: dict[str, Any] = {}
"""A recording worker process's env, expert and settings (set by :func:`_init_worker`)."""


def _init_worker(cfg: DemosConfig, threads: int) -> None:
    from envs.experts import make_expert
    from envs.recording_pool import limit_threads

    limit_threads(threads)
    _WORKER.update(cfg=cfg, env=make_recording_env(cfg), expert=make_expert(cfg.task), versions=package_versions())


def _worker_attempt(seed: int) -> dict[str, Any]:
    return attempt(_WORKER["cfg"], _WORKER["env"], _WORKER["expert"], seed, _WORKER["versions"])


def _parallel_attempts(cfg: DemosConfig, first_seed: int, budget: int):
    """Attempts of seeds first_seed .. first_seed + budget - 1 in ``cfg.workers`` processes, in seed order."""
    from envs.recording_pool import ordered_map, threads_per_worker

    seeds = list(range(first_seed, first_seed + max(0, budget)))
    return ordered_map(_worker_attempt, seeds, cfg.workers, _init_worker, (cfg, threads_per_worker(cfg.workers)))


def _commit(cfg: DemosConfig, manifest: dict, result: dict) -> None:
    """Count one attempt (in seed order); a success becomes the next ``episode_{i}.hdf5``."""
    seed = result["seed"]
    manifest["attempts"] += 1
    manifest["next_seed"] = seed + 1
    if result["success"]:
        name = f"episode_{len(manifest['episodes'])}.hdf5"
        os.replace(result["pending"], cfg.out / name)
        manifest["episodes"].append(
            {"file": name, "seed": seed, "num_steps": result["steps"], "instruction": result["instruction"]}
        )
    else:
        manifest["failures"] += 1
        manifest["failed_seeds"].append(seed)
    manifest["updated_at"] = _now()
    write_json_atomic(cfg.out / MANIFEST, manifest)


def record_demos(cfg: DemosConfig) -> dict:
    """Record ``cfg.episodes`` successful episodes into ``cfg.out`` (see the module docstring); returns the manifest.

    With ``cfg.workers > 1`` attempts run in that many processes (``envs.recording_pool.ordered_map``) and are
    committed in seed order, so the folder is the same as with one worker.

    The folder is locked for the run (``common.locks.RunFolder``): a second ``vla demos`` on it fails at once.

    Raises:
        ValueError: unknown task, incompatible existing folder.
        RuntimeError: ``max_attempts`` reached before enough successes (what was recorded stays valid).
        RunLockedError: another run uses the folder.
    """
    from common.locks import RunFolder
    from envs.experts import make_expert
    from envs.specs import get_task

    get_task(cfg.task)
    make_expert(cfg.task)  # an unknown expert fails here, before any folder is touched
    with RunFolder(cfg.out, "vla demos") as folder:
        return _record_in(cfg, folder)


def _record_in(cfg: DemosConfig, folder) -> dict:
    """The body of :func:`record_demos`, run while the folder is locked."""
    import shutil

    from tqdm import tqdm

    manifest = load_or_start_manifest(cfg)
    shutil.rmtree(cfg.out / PENDING_DIR, ignore_errors=True)  # attempts of an interrupted run, never committed
    max_attempts = cfg.max_attempts or 3 * cfg.episodes + 10
    bar = tqdm(
        total=cfg.episodes,
        initial=min(len(manifest["episodes"]), cfg.episodes),
        unit="episode",
        desc=f"{cfg.task}",
        disable=not cfg.progress,
        dynamic_ncols=True,
    )
    source = (
        _sequential_attempts(cfg, manifest["next_seed"])
        if cfg.workers == 1
        else _parallel_attempts(cfg, manifest["next_seed"], max_attempts - manifest["attempts"])
    )
    try:
        while len(manifest["episodes"]) < cfg.episodes:
            if manifest["attempts"] >= max_attempts:
                raise RuntimeError(
                    f"{cfg.task}: {manifest['attempts']} attempts reached max_attempts={max_attempts} with "
                    f"{len(manifest['episodes'])}/{cfg.episodes} successes; failed seeds {manifest['failed_seeds']}"
                )
            result = next(source)
            _commit(cfg, manifest, result)
            folder.keep_partial()
            bar.update(int(result["success"]))
            bar.set_postfix(attempts=manifest["attempts"], failures=manifest["failures"], steps=result["steps"])
    finally:
        bar.close()
        source.close()
        shutil.rmtree(cfg.out / PENDING_DIR, ignore_errors=True)
    write_json_atomic(cfg.out / MANIFEST, manifest)
    return manifest
