"""``vla check-checkpoint``: reproduce a checkpoint's stored reference outputs and report max |diff| per output.

The reference file (``reference_io.safetensors``, fixtures/openvla_tiny_a/README.md) holds inputs (images,
pixel_values, input_ids, attention_mask, proprio_raw, proprio) and outputs of the original code. Every output
this module knows how to compute is recomputed from the stored inputs and compared:

* preprocessing: ``pixel_values`` from ``images``, ``proprio`` from ``proprio_raw``;
* ``projected_patch_embeddings``: projector(vision(pixel_values)) of all views;
* original OpenVLA (causal, view 0, no proprio, greedy over the full vocabulary): ``logits_last``,
  ``discrete_token_ids``, ``discrete_actions_normalized``, ``discrete_actions`` (unnormalized without 1e-8),
  ``discrete_greedy_margins``;
* OFT (bidirectional, all views + proprio, L1 head): ``oft_input_ids`` / ``oft_attention_mask`` /
  ``oft_action_token_mask`` (rebuilt as OFT's ``_prepare_input_for_action_prediction``),
  ``oft_action_hidden_states``, ``oft_actions_normalized``, ``oft_actions``.
"""

from __future__ import annotations

import json
from typing import Any

import torch

from envs.layout import CAMERAS
from policies.normalization import select_unnorm_key
from policies.openvla.check_config import CheckCheckpointConfig

INPUTS = ("images", "pixel_values", "input_ids", "attention_mask", "proprio_raw", "proprio")


def _load(cfg: CheckCheckpointConfig, ref: dict[str, torch.Tensor]):
    """(plain VLA, processor, {unnorm_key: NormStats}) of an OpenVLA-format folder or a `vla train` checkpoint
    (LoRA adapters merged, so both give the same module)."""
    from policies.openvla.openvla_format import from_openvla_checkpoint
    from policies.openvla.run_format import RUN_CHECKPOINT_FORMAT, load_checkpoint_model

    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[cfg.dtype]
    config_file = cfg.checkpoint / "config.json"
    if not config_file.is_file() and not (cfg.checkpoint / "checkpoints" / "last" / "config.json").is_file():
        raise FileNotFoundError(
            f"{config_file}: not found (expected an OpenVLA-format folder or a `vla train` "
            "checkpoint: RUN/checkpoints/step_N, RUN/checkpoints/last or RUN)"
        )
    raw = json.loads(config_file.read_text()) if config_file.is_file() else {"format": RUN_CHECKPOINT_FORMAT}
    if raw.get("format") == RUN_CHECKPOINT_FORMAT:
        model, processor, stats, run_raw = load_checkpoint_model(
            cfg.checkpoint, device=cfg.device, dtype=dtype, merge=True
        )
        return model, processor, {run_raw["unnorm_key"]: stats}
    overrides: dict[str, Any] = {"center_crop": False}
    if "pixel_values" in ref:
        overrides["cameras"] = CAMERAS[: ref["pixel_values"].shape[1] // 6]
    if "oft_actions_normalized" in ref:
        overrides["chunk_size"] = int(ref["oft_actions_normalized"].shape[1])
    return from_openvla_checkpoint(cfg.checkpoint, dtype=dtype, device=cfg.device, **overrides)


def oft_inputs(input_ids: torch.Tensor, attention_mask: torch.Tensor, n_slots: int, placeholder: int, stop: int):
    """OFT ``_prepare_input_for_action_prediction``: ids + n_slots placeholders + STOP, mask, action-slot mask."""
    b = input_ids.shape[0]
    ids = torch.cat([input_ids, torch.full((b, n_slots), placeholder), torch.full((b, 1), stop)], dim=1)
    mask = torch.cat([attention_mask, torch.ones(b, n_slots + 1, dtype=attention_mask.dtype)], dim=1)
    action_mask = torch.zeros_like(ids)
    action_mask[:, input_ids.shape[1] : input_ids.shape[1] + n_slots] = 1
    return ids, mask, action_mask


@torch.no_grad()
def compute_outputs(model, processor, stats, ref: dict[str, torch.Tensor], meta: dict) -> dict[str, torch.Tensor]:
    """Recompute every known output present in ``ref`` (float32 / int64 tensors on CPU)."""
    from policies.openvla.heads import token_ids_to_actions

    dev = model.device
    out: dict[str, torch.Tensor] = {}
    key = select_unnorm_key(stats, meta.get("unnorm_key")) if stats else None
    mode = meta.get("oft", {}).get("ACTION_PROPRIO_NORMALIZATION_TYPE", model.config.norm_mode)
    pv = ref["pixel_values"].to(dev)
    ids, mask = ref["input_ids"].to(dev), ref["attention_mask"].to(dev)
    if "images" in ref:
        out["pixel_values"] = processor.preprocess_images(ref["images"], train=False)
    if "proprio_raw" in ref and key is not None and stats[key].proprio is not None:
        out["proprio"] = torch.from_numpy(stats[key].proprio.normalize(ref["proprio_raw"].numpy(), mode))
    out["projected_patch_embeddings"] = model.embed_images(pv)
    if "discrete_token_ids" in ref or "logits_last" in ref:
        n = ref["discrete_token_ids"].shape[1] if "discrete_token_ids" in ref else 1
        gen = model.generate_action_tokens(
            pv[:, : model.config.channels_per_view],
            ids,
            mask,
            proprio=None,
            n_tokens=n,
            restrict_to_actions=False,
            return_logits=True,
        )
        top2 = gen["logits"].topk(2, dim=-1).values
        normalized = token_ids_to_actions(
            gen["token_ids"], model.config.n_action_bins, model.config.action_token_end_id
        )
        out.update(
            logits_last=gen["logits"][:, 0],
            discrete_token_ids=gen["token_ids"],
            discrete_actions_normalized=normalized,
            discrete_greedy_margins=top2[..., 0] - top2[..., 1],
        )
        if key is not None:  # original OpenVLA: always q01/q99 and no +1e-8
            out["discrete_actions"] = torch.from_numpy(
                stats[key].action.unnormalize(normalized.cpu().numpy(), "bounds_q99", eps=0.0)
            )
    if model.config.action_head == "l1" and ("oft_action_hidden_states" in ref or "oft_actions_normalized" in ref):
        n_slots = model.config.n_action_slots
        llm = model.config.llm
        out["oft_input_ids"], out["oft_attention_mask"], out["oft_action_token_mask"] = oft_inputs(
            ref["input_ids"], ref["attention_mask"], n_slots, llm.bos_token_id, llm.eos_token_id
        )
        proprio = ref["proprio"].to(dev) if model.proprio_projector is not None else None
        hidden = model.action_hidden_states(pv, ids, mask, proprio)
        actions = model.action_head(hidden)
        out.update(oft_action_hidden_states=hidden, oft_actions_normalized=actions)
        if key is not None:
            out["oft_actions"] = torch.from_numpy(stats[key].action.unnormalize(actions.float().cpu().numpy(), mode))
    return {k: v.detach().cpu() for k, v in out.items()}


def compare(ref: dict[str, torch.Tensor], ours: dict[str, torch.Tensor], atol: float) -> list[dict]:
    """One row per reference output: name, shape, max_abs_diff (None when not computed), tolerance, ok."""
    rows = []
    for name in sorted(set(ref) - set(INPUTS) | (set(ours) & set(ref))):
        want, got = ref[name], ours.get(name)
        exact = not want.dtype.is_floating_point
        row = {"name": name, "shape": list(want.shape), "tolerance": 0.0 if exact else atol}
        if got is None:
            row.update(max_abs_diff=None, ok=False, note="not computed")
        elif tuple(got.shape) != tuple(want.shape):
            row.update(max_abs_diff=None, ok=False, note=f"shape {list(got.shape)}")
        else:
            diff = (got.double() - want.double()).abs().max().item() if want.numel() else 0.0
            row.update(max_abs_diff=diff, ok=diff <= row["tolerance"], note="exact" if exact else "")
        rows.append(row)
    return rows


def run_check(cfg: CheckCheckpointConfig) -> int:
    """Load, recompute, print the table; 0 when every output is within tolerance, 1 otherwise.

    Raises:
        FileNotFoundError: the checkpoint or reference file is missing.
    """
    from safetensors.torch import load_file

    if not cfg.reference.is_file():
        raise FileNotFoundError(f"{cfg.reference}: reference file not found")
    ref = load_file(str(cfg.reference))
    meta_path = cfg.reference.with_suffix(".json")
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    model, processor, stats = _load(cfg, ref)
    rows = compare(ref, compute_outputs(model, processor, stats, ref, meta), cfg.atol)
    print(f"checkpoint {cfg.checkpoint}  reference {cfg.reference}  dtype {cfg.dtype}  device {cfg.device}")
    print(f"{'output':<30} {'shape':<18} {'max |diff|':>12} {'tolerance':>10}  status")
    for r in rows:
        diff = "-" if r["max_abs_diff"] is None else f"{r['max_abs_diff']:.3e}"
        status = "ok" if r["ok"] else "FAIL"
        print(f"{r['name']:<30} {str(r['shape']):<18} {diff:>12} {r['tolerance']:>10.1e}  {status} {r['note']}")
    failed = [r["name"] for r in rows if not r["ok"]]
    print(f"{len(rows) - len(failed)}/{len(rows)} outputs within tolerance" + (f"; failed: {failed}" if failed else ""))
    return 1 if failed else 0
