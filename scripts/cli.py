"""The ``vla`` command: one tyro subcommand per verb, each a thin call into a package.

This is the one module allowed to import every package. Each command imports its package lazily inside the
function so that ``vla --help`` stays fast; the config dataclasses it parses live in light modules (no torch or
ManiSkill at import time), and their field docstrings are the ``--help`` text.
"""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path
from typing import Annotated, TypeVar

import tyro
from tyro.conf import OmitArgPrefixes
from tyro.extras import SubcommandApp

from envs.config import DemosConfig, DoctorConfig, EnvsConfig
from harness.config import BenchConfig
from harness.review_config import CompareConfig, GalleryConfig
from policies.openvla.check_config import CheckCheckpointConfig
from policies.serving.config import ServeConfig
from scripts.sweep_spec import SweepConfig
from train.config import DataCheckConfig
from train.train_config import LEGACY_FLAGS, MergeLoraConfig, TrainConfig

T = TypeVar("T")
Flags = Annotated[OmitArgPrefixes[T], tyro.conf.arg(name="")]
"""A command's config: flat flags (nested groups keep their own titled box in --help, no "cfg" prefix)."""
CONFIG_FILE_COMMANDS = {"train": (TrainConfig, LEGACY_FLAGS), "bench": (BenchConfig, {})}
"""Commands that read ``--config FILE.yaml`` (flags given on the command line override the file)."""

app = SubcommandApp()


@app.command(name="doctor")
def doctor(cfg: Flags[DoctorConfig]) -> int:
    """Check Vulkan/Mesa, packages and devices; say exactly what is missing."""
    from envs.doctor import run_doctor

    return run_doctor(cfg)


@app.command(name="envs")
def envs_(cfg: Flags[EnvsConfig]) -> int:
    """List tasks with their cameras, action layout, max steps and instruction templates."""
    from envs.specs import print_tasks

    return print_tasks(cfg)


@app.command(name="demos")
def demos(cfg: Flags[DemosConfig]) -> int:
    """Record successful scripted-expert episodes as episode_{i}.hdf5 in the seed layout."""
    from envs.recording import record_demos

    record_demos(cfg)
    return 0


data = SubcommandApp()


@data.command(name="check")
def data_check(cfg: Flags[DataCheckConfig]) -> int:
    """Validate an episode folder and print a summary (episodes, steps, cameras, action ranges, instructions)."""
    from train.datacheck import run_data_check

    return run_data_check(cfg)


app.command(data, name="data", help="Inspect and validate recorded episode folders.")


@app.command(name="check-checkpoint")
def check_checkpoint(cfg: Flags[CheckCheckpointConfig]) -> int:
    """Load a checkpoint, run stored reference inputs, print max |diff| per output; non-zero beyond tolerance."""
    from policies.openvla.check import run_check

    return run_check(cfg)


@app.command(name="bench")
def bench(cfg: Flags[BenchConfig]) -> int:
    """Roll a policy out across tasks x seeds -> OUT/episodes.jsonl, results.json, videos/."""
    from harness.bench import run_bench

    return run_bench(cfg)


@app.command(name="serve")
def serve(cfg: Flags[ServeConfig]) -> int:
    """Serve a policy over the openpi WebSocket protocol (openpi_client works; `vla bench --policy remote:ws://...`)."""
    from policies.serving.server import run_serve

    return run_serve(cfg)


@app.command(name="gallery")
def gallery(cfg: Flags[GalleryConfig]) -> int:
    """Static HTML review page of a run (OUT/index.html), or of two runs side by side (OUT/compare.html)."""
    from harness.gallery import run_gallery

    return run_gallery(cfg)


@app.command(name="compare")
def compare(cfg: Flags[CompareConfig]) -> int:
    """Paired comparison of two runs on shared (task, seed): per-task difference and exact McNemar test."""
    from harness.compare import run_compare

    return run_compare(cfg)


@app.command(name="train")
def train(cfg: Flags[TrainConfig]) -> int:
    """Fine-tune a VLA (tiny | openvla-7b, LoRA or full) -> RUN/checkpoints/step_N; --config FILE.yaml, --resume."""
    from train.trainer import run_train

    evaluate = None
    if cfg.cadence.bench_every and cfg.cadence.benchmark:
        from scripts.sim_eval import make_sim_evaluator

        evaluate = make_sim_evaluator(cfg.cadence.benchmark, cfg.out)
    return run_train(cfg, evaluate=evaluate)


@app.command(name="sweep")
def sweep(cfg: Flags[SweepConfig]) -> int:
    """Train + benchmark every variant of a sweep spec on the same seeds -> OUT/report.md, report.json, index.html."""
    from scripts.sweep import run_sweep

    return run_sweep(cfg)


@app.command(name="merge-lora")
def merge_lora(cfg: Flags[MergeLoraConfig]) -> int:
    """Merge a LoRA checkpoint's adapter into its base weights -> a finetune=full checkpoint directory."""
    from train.checkpointing import run_merge_lora

    return run_merge_lora(cfg)


class UsageError(Exception):
    """A command's flags were rejected by its config's own checks (``__post_init__``)."""


def _on_parse_error(event) -> None:
    """tyro hook: a config check that failed becomes one ``error:`` line instead of tyro's box (which names
    internal argument paths such as ``__tyro-dummy-inner__.cfg.optim``); other usage errors keep tyro's output.
    Uses tyro's experimental ``tyro._errors`` hook (tyro is pinned; tests/scripts/test_cli_errors.py checks it)."""
    import tyro._errors as tyro_errors

    if isinstance(event, tyro_errors.InstantiationFailure):
        raise UsageError(event.message)


_PACKAGES = ("common", "envs", "policies", "train", "harness", "scripts", "benchmarks")
_OUR_CODE = tuple(str(Path(__import__(pkg).__file__).resolve().parent) + os.sep for pkg in _PACKAGES)


def expected_error(err: BaseException) -> bool:
    """Whether ``err`` is a refusal with a message for the user (printed as one line) rather than a bug (kept as a
    traceback): a config check, an error class of this project, a disk full anywhere, or a ValueError / OSError /
    RuntimeError / KeyError raised by this project's own code (the innermost frame of its traceback is ours)."""
    if isinstance(err, UsageError) or type(err).__module__.split(".")[0] in _PACKAGES:
        return True  # an error class of this project (EpisodeDataError, RecordsError, RunLockedError, ...)
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        return True
    if not isinstance(err, (ValueError, OSError, RuntimeError, KeyError)):
        return False
    tb = err.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and str(Path(tb.tb_frame.f_code.co_filename).resolve()).startswith(_OUR_CODE)


def error_line(err: BaseException) -> str:
    """The one line printed for an expected error (``error: ...``; ENOSPC says "no space left on device")."""
    text = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
    if isinstance(err, OSError) and err.strerror:  # not "[Errno 28] ..."
        text = err.strerror + (f": {err.filename}" if err.filename else "")
    if isinstance(err, OSError) and err.errno == errno.ENOSPC and "no space left" not in text.lower():
        text = f"no space left on device ({text})"
    return "error: " + " ".join(text.split())


def _dispatch(args: list[str]) -> int:
    from common.config_files import config_flag, parse_with_config

    if args[:1] and args[0] in CONFIG_FILE_COMMANDS and config_flag(args[1:]) is not None:
        cls, legacy = CONFIG_FILE_COMMANDS[args[0]]
        cfg = parse_with_config(cls, args[1:], f"vla {args[0]}", legacy, wrap=Flags[cls])
        return int({"train": train, "bench": bench}[args[0]](cfg) or 0)
    return int(
        app.cli(prog="vla", description="Train and benchmark VLA policies on dual-arm ManiSkill tasks.", args=args) or 0
    )


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``vla`` console script. Expected errors (see :func:`expected_error`) print one line
    ``error: ...`` to stderr and exit 2; anything else keeps its traceback; Ctrl-C exits 130."""
    import tyro._errors as tyro_errors

    args = list(sys.argv[1:] if argv is None else argv)
    try:
        with tyro_errors.on_parse_error(_on_parse_error):
            code = _dispatch(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as err:
        if not expected_error(err):
            raise
        print(error_line(err), file=sys.stderr)
        sys.exit(2)
    sys.exit(code)


if __name__ == "__main__":
    main()
