"""Every training recipe in benchmarks/recipes/ (and its controls/) is a valid `vla train --config` file."""

from __future__ import annotations

from pathlib import Path

import pytest

from train.train_config import TrainConfig

RECIPES = sorted((Path(__file__).resolve().parents[2] / "benchmarks" / "recipes").rglob("*.yaml"))


def test_the_demo_recipe_exists() -> None:
    assert "tiny-liftbar.yaml" in {p.name for p in RECIPES}


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.parent.name + "/" + p.name)
def test_recipe_builds_a_train_config(recipe: Path, tmp_path: Path) -> None:
    cfg = TrainConfig.from_yaml(recipe, data=tmp_path / "data", out=tmp_path / "run")
    assert cfg.config == recipe
    assert cfg.optim.batch_size * cfg.optim.grad_accum >= 16, "the recipe's global batch is below 16 (collapse warning)"
    assert not (tmp_path / "run").exists(), "building a config must not create the run folder"
