"""The flow-matching action head (pi0-style): loss on a fixed batch, deterministic sampling, what sampling
converges to, the model wiring (train vs eval), checkpoint round trip, and the formats that refuse it."""

from __future__ import annotations

import pytest
import torch
from test_openvla_checkpoint import write_run_checkpoint

from policies.openvla.heads import FlowMatchingActionHead, time_embedding
from policies.openvla.openvla_format import export_openvla_checkpoint
from policies.openvla.processor import VLAProcessor
from policies.openvla.run_format import load_checkpoint_model


def test_time_embedding_is_sine_cosine_over_geometric_periods() -> None:
    emb = time_embedding(torch.tensor([0.0, 0.5, 1.0]), 8)
    assert emb.shape == (3, 8)
    assert torch.allclose(emb[0], torch.tensor([0.0] * 4 + [1.0] * 4)), "t = 0: sin 0, cos 1"
    period = 4e-3 * (4.0 / 4e-3) ** (1 / 3)  # the second of 4 periods
    assert torch.isclose(emb[1, 1], torch.sin(torch.tensor(2 * torch.pi * 0.5 / period)), atol=1e-5)
    with pytest.raises(ValueError, match="even"):
        time_embedding(torch.zeros(1), 7)


def test_the_head_learns_two_chunks_and_sampling_reaches_them() -> None:
    # Two conditions, two target chunks: after training, K-step sampling from noise must land on each target.
    torch.manual_seed(0)
    head = FlowMatchingActionHead(llm_dim=8, hidden_dim=64, action_dim=3, chunk_size=2, num_blocks=2, num_steps=10)
    hidden = torch.randn(2, 2 * 3, 8)
    target = torch.tensor([[[0.5, -0.5, 0.2], [0.4, -0.4, 0.1]], [[-0.6, 0.3, 0.0], [-0.5, 0.2, 0.1]]])
    mask = torch.ones(2, 2, dtype=torch.bool)
    opt = torch.optim.Adam(head.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(600):
        loss, _ = head.loss(hidden.repeat(16, 1, 1), target.repeat(16, 1, 1), mask.repeat(16, 1), generator=gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-20:]) / 20 < 0.25 * sum(losses[:20]) / 20, "the flow-matching loss decreases"
    sample = head.sample(hidden)
    assert sample.shape == (2, 2, 3) and sample.dtype == torch.float32
    assert (sample - target).abs().max() < 0.15, f"samples {sample} vs targets {target}"


def test_sampling_is_deterministic_under_a_seed_and_per_row() -> None:
    torch.manual_seed(1)
    head = FlowMatchingActionHead(llm_dim=8, hidden_dim=16, action_dim=3, chunk_size=2)
    hidden = torch.randn(3, 6, 8)
    a, b = head.sample(hidden, seed=7), head.sample(hidden, seed=7)
    assert torch.equal(a, b), "same seed, same chunk"
    assert not torch.allclose(a, head.sample(hidden, seed=8)), "another seed, another noise"
    assert torch.allclose(head.sample(hidden[1:2], seed=7), a[1:2], atol=1e-6), "a row does not depend on its batch"
    assert not torch.allclose(head.sample(hidden, num_steps=1), a), "K is used"
    with pytest.raises(ValueError, match="num_steps"):
        FlowMatchingActionHead(8, 16, 3, 2, num_steps=0)


def test_the_vla_with_a_flow_head_trains_and_predicts(make_model, batch) -> None:
    model, cfg = make_model(seed=2, action_head="flow", flow_steps=4)
    inputs, actions = batch(cfg)
    model.train()
    torch.manual_seed(0)
    out = model(**inputs, actions=actions)
    assert out["loss"].ndim == 0 and out["loss"].requires_grad
    assert out["actions_pred"].shape == actions.shape and "curr_action_l1" in out
    out["loss"].backward()
    assert model.action_head.out.weight.grad is not None and model.action_head.condition[1].weight.grad is not None
    assert model.language_model.model.layers[0].mlp.up_proj.weight.grad is not None, "the LLM gets gradients"
    model.eval()
    chunk = model.predict_action_chunk(**inputs)
    assert chunk.shape == actions.shape and torch.equal(chunk, model.predict_action_chunk(**inputs))
    evaluated = model(**inputs, actions=actions)["actions_pred"]
    assert torch.allclose(evaluated, chunk, atol=1e-6), "in eval mode the metrics use the K-step sample"


def test_flow_checkpoint_round_trip_and_openvla_export_is_refused(
    tmp_path, make_model, micro_tokenizer, batch, norm_stats
) -> None:
    model, cfg = make_model(seed=3, action_head="flow", flow_steps=3, center_crop=False)
    proc = VLAProcessor(cfg, micro_tokenizer)
    write_run_checkpoint(tmp_path / "ckpt", model, proc, norm_stats)
    loaded, *_ = load_checkpoint_model(tmp_path / "ckpt")
    assert loaded.config.action_head == "flow" and loaded.config.flow_steps == 3
    inputs, _ = batch(cfg)
    assert torch.equal(model.predict_action_chunk(**inputs), loaded.predict_action_chunk(**inputs))
    with pytest.raises(ValueError, match="flow-matching head has no OpenVLA-format file"):
        export_openvla_checkpoint(tmp_path / "ov", model, norm_stats)
