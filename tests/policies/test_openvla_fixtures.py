"""Reproduce the reference fixtures of the ORIGINAL OpenVLA / OpenVLA-OFT code (../shared/fixtures).

Skipped with a reason when ../shared/fixtures is absent (a user's clone has none).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

pytestmark = pytest.mark.fixtures

FIXTURES = Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures"


def require_fixtures(name: str) -> Path:
    """../shared/fixtures, or skip with the reason when it (or ``name`` inside it) is absent."""
    if not (FIXTURES / name).exists():
        pytest.skip(f"shared fixtures not available at {FIXTURES / name} (a user's clone has no ../shared)")
    return FIXTURES


OUTPUTS = [
    "projected_patch_embeddings",
    "logits_last",
    "discrete_token_ids",
    "discrete_actions_normalized",
    "discrete_actions",
    "discrete_greedy_margins",
    "oft_input_ids",
    "oft_attention_mask",
    "oft_action_token_mask",
    "oft_action_hidden_states",
    "oft_actions_normalized",
    "oft_actions",
    "pixel_values",
    "proprio",
]


def _cli(argv: list[str]) -> int:
    from scripts.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    return int(exit_info.value.code or 0)


def test_check_checkpoint_reproduces_every_stored_output(capsys):
    tiny = require_fixtures("openvla_tiny_a") / "openvla_tiny_a"
    code = _cli(
        ["check-checkpoint", str(tiny), "--reference", str(tiny / "reference_io.safetensors"), "--atol", "1e-5"]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    rows = {line.split()[0]: line for line in out.splitlines() if line and line.split()[0] in OUTPUTS}
    assert sorted(rows) == sorted(OUTPUTS), out
    assert all(line.rstrip().split()[-1] in ("ok", "exact") for line in rows.values()), out
    assert "14/14 outputs within tolerance" in out


def test_check_checkpoint_fails_beyond_tolerance(tmp_path, capsys):
    tiny = require_fixtures("openvla_tiny_a") / "openvla_tiny_a"
    ref = load_file(str(tiny / "reference_io.safetensors"))
    ref["oft_actions_normalized"] = ref["oft_actions_normalized"] + 1e-3
    ref["discrete_token_ids"][0, 3] += 1
    save_file(ref, str(tmp_path / "reference_io.safetensors"))
    shutil.copy(tiny / "reference_io.json", tmp_path / "reference_io.json")
    code = _cli(["check-checkpoint", str(tiny), "--reference", str(tmp_path / "reference_io.safetensors")])
    out = capsys.readouterr().out
    assert code == 1
    assert "failed: ['discrete_token_ids', 'oft_actions_normalized']" in out


def test_fixture_heads_and_config_are_read_from_the_files():
    from policies.openvla.openvla_format import from_openvla_checkpoint

    tiny = require_fixtures("openvla_tiny_a") / "openvla_tiny_a"
    model, processor, stats = from_openvla_checkpoint(tiny)
    cfg = model.config
    assert (cfg.dino.width, cfg.dino.depth, cfg.dino.registers, cfg.siglip.mlp_dim) == (8, 3, 4, 29)
    assert (cfg.llm.hidden_size, cfg.llm.num_layers, cfg.llm.vocab_size) == (8, 2, 32064)
    assert (cfg.action_head, cfg.action_dim, cfg.proprio_dim, cfg.action_token_end_id) == ("l1", 14, 14, 32000)
    assert processor.settings.image_norm[0]["mean"] == (0.484375, 0.455078125, 0.40625)  # bf16-rounded tvf values
    assert list(stats) == ["tiny_dual_arm_a"] and not stats["tiny_dual_arm_a"].action.mask[[6, 13]].any()
    assert model.action_head.model.fc1.weight.dtype == torch.float32  # bf16 head file upcast


def test_fixture_with_a_missing_shard_names_it(tmp_path):
    tiny = require_fixtures("openvla_tiny_a") / "openvla_tiny_a"
    from policies.openvla.openvla_format import from_openvla_checkpoint

    copy = tmp_path / "ckpt"
    shutil.copytree(tiny, copy)
    (copy / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"model-00002-of-00002.safetensors.*language_model.lm_head.weight"):
        from_openvla_checkpoint(copy)


def test_openvla_7b_preset_maps_exactly_the_released_key_set():
    shapes_file = require_fixtures("openvla_7b_state_dict_shapes.json") / "openvla_7b_state_dict_shapes.json"
    from policies.openvla.config import preset
    from policies.openvla.keymap import openvla_rules, openvla_shapes
    from policies.openvla.model import HEAD_MODULES, VLA
    from policies.openvla.weights import key_report

    released = json.loads(shapes_file.read_text())
    cfg = preset("openvla-7b")
    with torch.device("meta"):
        model = VLA(cfg, skip_init=True)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items() if k.split(".")[0] not in HEAD_MODULES}
    mapped = openvla_shapes(openvla_rules(cfg, list(model.language_model.state_dict())), ours)
    key_report("openvla-7b preset vs released checkpoint", {k: tuple(v) for k, v in released["shapes"].items()}, mapped)
    assert len(mapped) == released["n_tensors"] == 982
    assert sum(torch.Size(s).numel() for s in mapped.values()) == released["n_params"]
