"""Config of ``vla bench`` (light: no numpy/torch/ManiSkill import, so ``vla --help`` stays fast).

Field docstrings are the ``--help`` text, one sentence each (tyro keeps their line breaks). Every episode starts
with env.reset(seed=s); its identity is (task, seed). An episode ends at the task's max_episode_steps, or -- with
--end-on-success (default) -- post_success_steps steps after its first success (success_at_end is then measured
at that step). success_once = success at any step (the headline success rate), success_at_end = success at the
last step. Episodes whose env or policy raised are status `error`, those over --episode-timeout `timeout` (the
worker process is killed; setting it runs episodes in worker processes even with --workers 1): neither is a
failure, both are excluded from success rates and reported separately. Temporal ensembling is ACT's (weights
exp(-m i), oldest prediction first; ACT uses m = 0.01) and queries the policy every step.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Literal

import tyro

from envs.config import parse_cameras
from envs.specs import TASKS, get_task
from envs.visuals import VisualQuality, check_visual_quality
from harness.benchmark_specs import load_benchmark, parse_seeds

VideoMode = Literal["all", "failures", "none"]


def _policy_help() -> str:
    """--policy help, listing the registered kinds (``policies.base.policy_usages``)."""
    from policies.base import policy_usages

    return "Policy spec: " + " | ".join(policy_usages()) + "."


def _tasks_help() -> str:
    """--tasks help, listing the registered tasks (``envs.specs.TASKS``)."""
    return f"Tasks ({', '.join(TASKS)}; comma- or space-separated, or all) when no --benchmark is given."


def _benchmark_help() -> str:
    """--benchmark help, listing the named specs of harness/specs/."""
    from harness.benchmark_specs import available_benchmarks

    return f"Named benchmark ({', '.join(available_benchmarks())}) or a spec YAML path; or give --tasks and --seeds."


def parse_tasks(tasks: tuple[str, ...]) -> tuple[str, ...]:
    """Normalise ``("a,b",)`` / ``("a", "b")`` / ``("all",)`` into validated task names (``vla envs`` lists them).

    Raises:
        ValueError: an unknown task (with the closest known name) or a repeated one.
    """
    names = tuple(t.strip() for item in tasks for t in item.split(",") if t.strip())
    if names == ("all",):
        return tuple(TASKS)
    for name in names:
        get_task(name)
    if len(set(names)) != len(names):
        raise ValueError(f"tasks: a task is listed twice in {','.join(names)}")
    return names


@dataclasses.dataclass
class BenchConfig:
    """Roll a policy out on tasks x seeds and write OUT/episodes.jsonl, OUT/results.json and OUT/videos/."""

    policy: Annotated[str, tyro.conf.arg(help=_policy_help())]
    out: Path
    """Output folder (episodes.jsonl, results.json, videos/)."""
    benchmark: Annotated[str | None, tyro.conf.arg(help=_benchmark_help())] = None
    tasks: Annotated[tuple[str, ...], tyro.conf.arg(help=_tasks_help())] = ()
    seeds: str | None = None
    """Seeds when no --benchmark is given: A:B (A <= seed < B), a,b,c, or one integer."""
    workers: int = 1
    """Processes (or Ray actors; 0 = one per cluster CPU) running episodes, each with its own env and policy."""
    executor: Literal["local", "ray"] = "local"
    """Where episodes run: local (this process or --workers processes) or ray (Ray actors, here or on a cluster)."""
    ray_address: str | None = None
    """With --executor ray: auto or HOST:PORT joins a running cluster (default: start Ray on this machine)."""
    ray_num_gpus: float = 0.0
    """With --executor ray: GPUs reserved per actor (fractions share a GPU, e.g. 0.25)."""
    resume: bool = False
    """Continue an interrupted run in OUT: finished (task, seed) episodes are kept and skipped."""
    retry_errors: bool = False
    """With --resume: run episodes recorded as error/timeout again (their old records are replaced)."""
    fail_under: float | None = None
    """Exit with status 1 when the overall success rate (fraction in [0, 1]) is below this (for CI)."""
    max_episode_steps: int | None = None
    """Override every task's episode length limit (control steps at 20 Hz)."""
    end_on_success: bool = True
    """End an episode post_success_steps steps after its first success (saves time)."""
    post_success_steps: int = 10
    """Steps run after the first success before ending the episode (with --end-on-success)."""
    n_action_steps: int | None = None
    """Actions executed open-loop per policy call (k of the chunk's H; default: the whole chunk)."""
    temporal_ensemble_coeff: float | None = None
    """ACT temporal ensembling with coefficient m (ACT uses 0.01; queries the policy every step)."""
    video: VideoMode = "all"
    """Write one mp4 per episode: all, failures (failed and errored episodes only) or none."""
    video_cameras: tuple[str, ...] = ()
    """Cameras tiled in the videos (default: the policy's cameras, else the benchmark's, else head)."""
    video_stride: int = 1
    """Keep every k-th step in videos (plus the last), played at 20/k fps: fewer rendered frames per episode."""
    visual_quality: VisualQuality = "fast"
    """Arm meshes the cameras see: fast (low-poly, 8-12x cheaper CPU frames, same physics) or full (stock)."""
    image_size: int | None = None
    """Rendered image side in px (default: the policy's image size, else the benchmark's, else 128)."""
    instruction_split: Literal["seen", "unseen", "both"] = "seen"
    """Instruction templates: seen (training), unseen (held-out paraphrases) or both (each seed once per split)."""
    counterfactual: bool = False
    """Grounding tasks: run each seed once per goal, instructed accordingly (scores did-as-told vs other goal)."""
    episode_timeout: float | None = None
    """Wall-clock limit per episode in seconds; an episode over it is killed and recorded as `timeout`."""
    num_envs: int = 1
    """Sub-environments per process (> 1: ManiSkill GPU simulation with batched inference; needs CUDA)."""
    sim_backend: Literal["auto", "physx_cpu", "physx_cuda"] = "auto"
    """ManiSkill simulation backend."""
    render_backend: Literal["gpu", "cpu", "sapien_cuda", "none"] = "gpu"
    """ManiSkill render backend (gpu falls back to the CPU rasterizer, lavapipe, without CUDA)."""
    env_factory: str | None = None
    """Advanced: `module:function` building the env, with make_env's signature (default envs.wrapper.make_env)."""
    progress: bool = True
    """Show a progress bar."""
    config: Path | None = None
    """YAML file of these flags; flags given on the command line override it."""

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        if self.out.exists() and not self.out.is_dir():
            raise ValueError(f"out: {self.out} exists and is not a folder")
        self.tasks = parse_tasks(tuple(self.tasks))
        self.video_cameras = parse_cameras(tuple(self.video_cameras), "video_cameras")
        check_visual_quality(self.visual_quality)
        if self.benchmark is None and not (self.tasks and self.seeds is not None):
            raise ValueError("give --benchmark NAME, or both --tasks and --seeds")
        if self.benchmark is not None and (self.tasks or self.seeds is not None):
            raise ValueError(f"--benchmark {self.benchmark!r} fixes tasks and seeds: drop --tasks/--seeds")
        if self.seeds is not None:
            parse_seeds(self.seeds)
        if self.benchmark is not None:
            load_benchmark(self.benchmark)  # fails early on an unknown name or a missing file
        checks = {
            "workers": (self.workers >= (0 if self.executor == "ray" else 1), ">= 1 (0 only with --executor ray)"),
            "ray_num_gpus": (self.ray_num_gpus >= 0, ">= 0"),
            "num_envs": (self.num_envs >= 1, ">= 1"),
            "post_success_steps": (self.post_success_steps >= 0, ">= 0"),
            "video_stride": (self.video_stride >= 1, ">= 1"),
            "max_episode_steps": (self.max_episode_steps is None or self.max_episode_steps >= 1, ">= 1"),
            "n_action_steps": (self.n_action_steps is None or self.n_action_steps >= 1, ">= 1"),
            "temporal_ensemble_coeff": (
                self.temporal_ensemble_coeff is None or self.temporal_ensemble_coeff >= 0,
                ">= 0",
            ),
            "image_size": (self.image_size is None or 16 <= self.image_size <= 1024, "in [16, 1024]"),
            "episode_timeout": (self.episode_timeout is None or self.episode_timeout > 0, "> 0 seconds"),
            "fail_under": (self.fail_under is None or 0.0 <= self.fail_under <= 1.0, "a fraction in [0, 1], e.g. 0.95"),
        }
        for name, (ok, expected) in checks.items():
            if not ok:
                raise ValueError(f"{name} must be {expected}, got {getattr(self, name)!r}")
        if self.temporal_ensemble_coeff is not None and self.n_action_steps not in (None, 1):
            raise ValueError(
                f"temporal ensembling queries the policy every step: n_action_steps must be 1 or unset, "
                f"got {self.n_action_steps}"
            )
        if self.executor != "ray" and (self.ray_address is not None or self.ray_num_gpus):
            raise ValueError("--ray-address and --ray-num-gpus need --executor ray")
        if self.num_envs > 1 and self.workers > 1 and self.executor != "ray":
            raise ValueError(f"num_envs={self.num_envs} runs one GPU process: workers must be 1, got {self.workers}")
        if self.retry_errors and not self.resume:
            raise ValueError("retry_errors only makes sense with --resume")
        if self.env_factory is not None and ":" not in self.env_factory:
            raise ValueError(f"env_factory must be 'module:function', got {self.env_factory!r}")
