"""The ``vla`` command: one tyro subcommand per verb, each a thin call into a package.

This is the one module allowed to import every package. Each command imports its package lazily inside the
function so that ``vla --help`` stays fast; the config dataclasses it parses live in light modules (no torch or
ManiSkill at import time), and their field docstrings are the ``--help`` text.
"""

from __future__ import annotations

import sys

import tyro
from tyro.conf import OmitArgPrefixes
from tyro.extras import SubcommandApp

from envs.config import DemosConfig, DoctorConfig, EnvsConfig

app = SubcommandApp()


@app.command(name="doctor")
def doctor(cfg: OmitArgPrefixes[DoctorConfig]) -> int:
    """Check Vulkan/Mesa, packages and devices; say exactly what is missing."""
    from envs.doctor import run_doctor

    return run_doctor(cfg)


@app.command(name="envs")
def envs_(cfg: OmitArgPrefixes[EnvsConfig]) -> int:
    """List tasks with their cameras, action layout, max steps and instruction templates."""
    from envs.specs import print_tasks

    return print_tasks(cfg)


@app.command(name="demos")
def demos(cfg: OmitArgPrefixes[DemosConfig]) -> int:
    """Record successful scripted-expert episodes as episode_{i}.hdf5 in the seed layout."""
    from envs.recording import record_demos

    record_demos(cfg)
    return 0


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``vla`` console script."""
    code = app.cli(prog="vla", description="Train and benchmark VLA policies on dual-arm ManiSkill tasks.", args=argv)
    sys.exit(int(code or 0))


if __name__ == "__main__":
    main()
