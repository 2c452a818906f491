"""Shared fixtures for the policies tests: a micro VLA config (seconds to build), its tokenizer, inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

INSTRUCTIONS = ["pick up the red cube", "Open the drawer", "stack the two blocks on the plate"]


def micro_overrides() -> dict:
    """A VLAConfig far smaller than ``tiny`` with the same structure (fused ViTs, GQA Llama, proprio, 2 views)."""
    return dict(
        image_size=32,
        patch_size=16,
        dino={"width": 32, "depth": 3, "heads": 2, "mlp_dim": 64, "registers": 4},
        siglip={"width": 32, "depth": 3, "heads": 2, "mlp_dim": 48},
        llm={"hidden_size": 32, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2, "intermediate_size": 64},
        chunk_size=2,
        action_dim=3,
        proprio_dim=5,
        n_action_bins=32,
    )


@pytest.fixture(scope="session")
def micro_tokenizer():
    from policies.openvla.tokenizer import train_instruction_tokenizer

    return train_instruction_tokenizer(INSTRUCTIONS, vocab_size=300, n_action_bins=32)


@pytest.fixture(scope="session")
def make_config(micro_tokenizer):
    """factory(**overrides) -> VLAConfig of the micro model matched to ``micro_tokenizer``."""
    from policies.openvla.config import preset
    from policies.openvla.tokenizer import config_for_tokenizer

    def make(**overrides):
        return config_for_tokenizer(preset("tiny", **{**micro_overrides(), **overrides}), micro_tokenizer)

    return make


@pytest.fixture(scope="session")
def make_model(make_config):
    """factory(seed=0, **overrides) -> (VLA in eval mode, config)."""
    from policies.openvla.model import VLA

    def make(seed: int = 0, **overrides):
        cfg = make_config(**overrides)
        torch.manual_seed(seed)
        return VLA(cfg).eval(), cfg

    return make


@pytest.fixture
def batch(micro_tokenizer):
    """factory(config, n=3) -> processor inputs (eval) + normalized proprio and actions for ``config``."""
    from policies.openvla.processor import VLAProcessor

    def make(config, n: int = 3, seed: int = 0):
        rng = np.random.default_rng(seed)
        proc = VLAProcessor(config, micro_tokenizer)
        images = rng.integers(0, 256, (n, len(config.cameras), 40, 48, 3), dtype=np.uint8)
        instructions = [INSTRUCTIONS[i % len(INSTRUCTIONS)] + " now" * i for i in range(n)]
        inputs = proc(images, instructions, train=False)
        inputs["proprio"] = torch.from_numpy(rng.uniform(-1, 1, (n, config.proprio_dim)).astype(np.float32))
        actions = torch.from_numpy(rng.uniform(-1, 1, (n, config.chunk_size, config.action_dim)).astype(np.float32))
        return inputs, actions

    return make


@pytest.fixture
def norm_stats():
    from policies.normalization import ArrayStats, NormStats

    rng = np.random.default_rng(1)
    return {
        "micro": NormStats(
            action=ArrayStats.compute(rng.normal(size=(64, 3))),
            proprio=ArrayStats.compute(rng.normal(size=(64, 5))),
            num_transitions=64,
        )
    }


@pytest.fixture(scope="module")
def ckpt():
    """A tiny trained checkpoint directory (serving_fixtures.tiny_checkpoint), built once per module."""
    from serving_fixtures import tiny_checkpoint

    return tiny_checkpoint()


@pytest.fixture(scope="module")
def local(ckpt):
    """The same checkpoint in-process (the reference the served values must equal)."""
    from policies.base import make_policy

    return make_policy(f"checkpoint:{ckpt}")
