"""The VLA: fused ViTs -> projector -> Llama, with an OFT L1 head or OpenVLA action tokens.

LLM input per sample (OpenVLA / OpenVLA-OFT ``modeling_prismatic``):

    [BOS, V*N patch embeddings, (proprio token), prompt ids[1:], H*A action slots, (STOP)]

* ``l1`` head and ``tokens`` + ``parallel``: the action slots are zero vectors (OFT multiplies the placeholder
  embeddings by 0), a STOP token (eos) follows, attention is fully bidirectional (transformers ``is_causal=False``:
  padded keys still masked). The hidden state (after the final RMSNorm) for slot j is read at the position of
  slot j-1 (slot 0 at the last prompt token) -- OFT's off-by-one next-token alignment.
* ``tokens`` + ``autoregressive``: causal attention; training feeds the ground-truth action tokens (teacher
  forcing), inference decodes greedily with a KV cache (original OpenVLA ``predict_action``).

Prompts arrive right-padded; each sample's valid tokens are packed to the front (``right``) so padding never sits
between the prompt and the action slots, or to the back (``left``) for autoregressive decoding.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from policies.openvla.config import VLAConfig
from policies.openvla.heads import (
    FiLM,
    Projector,
    ProprioProjector,
    actions_to_token_ids,
    make_action_head,
    token_ids_to_actions,
)
from policies.openvla.keypoints import make_keypoint_encoder
from policies.openvla.vision import VisionBackbone

HEAD_MODULES = ("action_head", "proprio_projector", "film", "keypoint_encoder")
"""Top-level modules that are not part of an OpenVLA checkpoint; trained fully and saved as heads."""


def llama_config(config: VLAConfig):
    """transformers ``LlamaConfig`` for ``config.llm`` (untied lm_head, no biases, SiLU, default RoPE)."""
    from transformers import LlamaConfig

    llm = config.llm
    cfg = LlamaConfig(
        vocab_size=llm.vocab_size,
        hidden_size=llm.hidden_size,
        intermediate_size=llm.intermediate_size,
        num_hidden_layers=llm.num_layers,
        num_attention_heads=llm.num_heads,
        num_key_value_heads=llm.num_kv_heads,
        max_position_embeddings=llm.max_position_embeddings,
        rms_norm_eps=llm.rms_norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": float(llm.rope_theta)},
        pad_token_id=llm.pad_token_id,
        bos_token_id=llm.bos_token_id,
        eos_token_id=llm.eos_token_id,
        tie_word_embeddings=False,
        attention_bias=False,
        mlp_bias=False,
        hidden_act="silu",
    )
    cfg._attn_implementation = config.attn_implementation
    return cfg


def _skip_init(enabled: bool):
    if not enabled:
        return contextlib.nullcontext()
    from transformers.initialization import no_init_weights

    return no_init_weights()


class VLA(nn.Module):
    """OpenVLA-architecture vision-language-action model built from a :class:`VLAConfig`.

    Submodules (names = OpenVLA checkpoint prefixes): ``vision_backbone``, ``projector``, ``language_model``
    (``LlamaForCausalLM``), and the heads ``proprio_projector`` (proprio_dim > 0), ``action_head`` (l1 head),
    ``film`` (use_film), ``keypoint_encoder`` (keypoints > 0); the flow head (``action_head="flow"``) lives in
    ``action_head`` too.

    Args:
        config: the architecture.
        skip_init: leave the backbone weights (vision, projector, LLM) uninitialised because a checkpoint will
            overwrite all of them (fast for 7B); the heads are always initialised.
    """

    def __init__(self, config: VLAConfig, *, skip_init: bool = False) -> None:
        super().__init__()
        from transformers import LlamaForCausalLM

        self.config = config
        d = config.llm.hidden_size
        with _skip_init(skip_init):
            self.vision_backbone = VisionBackbone(config)
            self.projector = Projector(config.vision_dim, d, config.projector_kind == "fused-gelu-mlp")
            self.language_model = LlamaForCausalLM(llama_config(config))
        self.proprio_projector = ProprioProjector(config.proprio_dim, d) if config.proprio_dim > 0 else None
        self.action_head = make_action_head(config)
        self.keypoint_encoder = make_keypoint_encoder(config)
        self._given_points: torch.Tensor | None = None  # set by forward for the keypose readout (computed once)
        self.film = None
        if config.use_film:
            self.film = FiLM(
                d,
                {
                    name: (spec.width, self.vision_backbone.featurizer_blocks(name))
                    for name, _, spec in config.featurizers
                },
            )

    def _apply(self, fn, recurse=True):
        # .to(bfloat16) would round the RoPE inverse frequencies; keep them float32 as upstream does.
        super()._apply(fn, recurse)
        rotary = self.language_model.model.rotary_emb
        if rotary.inv_freq.dtype != torch.float32 and rotary.inv_freq.device.type != "meta":
            inv_freq, _ = rotary.compute_default_rope_parameters(rotary.config)
            rotary.inv_freq = inv_freq.to(device=rotary.inv_freq.device, dtype=torch.float32)
            rotary.original_inv_freq = rotary.inv_freq.clone()
        return self

    @property
    def dtype(self) -> torch.dtype:
        """Dtype of the LLM weights (the compute dtype)."""
        return self.language_model.dtype

    @property
    def device(self) -> torch.device:
        """Device of the LLM weights."""
        return self.language_model.device

    def compile_submodules(self, **kwargs) -> VLA:
        """Optional ``torch.compile`` of the vision tower and the Llama decoder in place; returns self."""
        self.vision_backbone.compile(**kwargs)
        self.language_model.model.compile(**kwargs)
        return self

    # ---- inputs ---------------------------------------------------------------------------------------------
    def _check(self, pixel_values, input_ids, attention_mask, proprio, need_proprio: bool) -> None:
        if pixel_values.ndim != 4:
            raise ValueError(f"pixel_values must be (B, V*C, S, S), got shape {tuple(pixel_values.shape)}")
        if input_ids.ndim != 2 or attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"input_ids {tuple(input_ids.shape)} and attention_mask {tuple(attention_mask.shape)} "
                "must both be (B, T)"
            )
        if pixel_values.shape[0] != input_ids.shape[0]:
            raise ValueError(
                f"batch sizes differ: pixel_values {pixel_values.shape[0]} vs input_ids {input_ids.shape[0]}"
            )
        m = attention_mask.to(torch.int64)
        if (m[:, 0] == 0).any() or (m[:, 1:] > m[:, :-1]).any():
            raise ValueError("attention_mask must be right-padded (ones then zeros) with the BOS token valid")
        if (
            need_proprio
            and self.config.proprio_dim > 0
            and (proprio is None or proprio.shape != (input_ids.shape[0], self.config.proprio_dim))
        ):
            got = None if proprio is None else tuple(proprio.shape)
            raise ValueError(f"proprio must be (B, {self.config.proprio_dim}) normalized, got {got}")

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        """LLM input embeddings (B, T) -> (B, T, D)."""
        return self.language_model.get_input_embeddings()(ids)

    def embed_images(self, pixel_values: torch.Tensor, language: torch.Tensor | None = None) -> torch.Tensor:
        """Projected patch embeddings (B, V*N, D); ``language`` (B, D) is the FiLM condition (use_film only).

        With ``config.keypoints`` each view's N patches are followed by its keypoint token: (B, V*(N+1), D).
        """
        film = self.film(language) if self.film is not None else None
        pixels = pixel_values.to(self.dtype)
        patches = self.projector(self.vision_backbone(pixels, film))
        if self.keypoint_encoder is None:
            return patches
        points = self._given_points
        if points is None:
            points = self.keypoint_encoder.view_keypoints(pixels, self.config.channels_per_view)
        points = self.keypoint_encoder(points)
        b, v = points.shape[:2]  # points: (B, V, D) tokens
        per_view = patches.reshape(b, v, -1, patches.shape[-1])
        return torch.cat([per_view, points[:, :, None]], dim=2).reshape(b, -1, patches.shape[-1])

    def _prefix(self, pixel_values, text, mask, proprio) -> torch.Tensor:
        language = None
        if self.film is not None:
            w = mask.to(text.dtype).unsqueeze(-1)
            language = (text * w).sum(1) / w.sum(1)  # mean embedding of the valid prompt tokens
        prefix = self.embed_images(pixel_values, language)
        if proprio is not None and self.proprio_projector is not None:
            token = self.proprio_projector(proprio.to(self.dtype))
            prefix = torch.cat([prefix, token[:, None]], dim=1)
        return prefix

    def _sequence(self, pixel_values, input_ids, attention_mask, proprio, slots, stop: bool, left: bool = False):
        """Assemble LLM inputs; returns (embeds (B, L, D), mask (B, L) int64, slot_start (B,) int64)."""
        text = self.embed_tokens(input_ids)
        mask = attention_mask.to(torch.bool)
        prefix = self._prefix(pixel_values, text, mask, proprio)
        b, dev = input_ids.shape[0], input_ids.device
        parts, valid = [text[:, :1], prefix, text[:, 1:]], [mask[:, :1], None, mask[:, 1:]]
        valid[1] = torch.ones(b, prefix.shape[1], dtype=torch.bool, device=dev)
        if slots is not None:
            parts.append(slots)
            valid.append(torch.ones(b, slots.shape[1], dtype=torch.bool, device=dev))
        if stop:
            eos = torch.full((b, 1), self.config.llm.eos_token_id, dtype=torch.int64, device=dev)
            parts.append(self.embed_tokens(eos))
            valid.append(torch.ones(b, 1, dtype=torch.bool, device=dev))
        embeds, keep = torch.cat(parts, dim=1), torch.cat(valid, dim=1)
        if not bool(keep.all()):
            # Stable sort moves padding to the end (or start) and keeps the order of the valid tokens.
            order = torch.argsort(keep.to(torch.int8), dim=1, descending=not left, stable=True)
            embeds = embeds.gather(1, order[..., None].expand_as(embeds))
            keep = keep.gather(1, order)
        slot_start = prefix.shape[1] + mask.sum(1)
        return embeds, keep.to(torch.int64), slot_start

    def _llm(self, embeds, mask, causal: bool, **kwargs):
        """Llama decoder on embeddings -> ``BaseModelOutputWithPast`` (final-norm hidden states, cache).

        ``is_causal`` per call: transformers 5 then builds a causal or a bidirectional mask (padded keys masked)
        and passes the flag on to SDPA (``merge_with_config_defaults``).
        """
        return self.language_model.model(inputs_embeds=embeds, attention_mask=mask, is_causal=causal, **kwargs)

    @staticmethod
    def _readout(hidden: torch.Tensor, slot_start: torch.Tensor, n_slots: int) -> torch.Tensor:
        # Off by one: slot j is read at the position of slot j-1 (next-token alignment, OFT).
        idx = slot_start[:, None] - 1 + torch.arange(n_slots, device=hidden.device)
        return hidden.gather(1, idx[..., None].expand(-1, -1, hidden.shape[-1]))

    def action_hidden_states(
        self,
        pixel_values,
        input_ids,
        attention_mask,
        proprio=None,
        slots: torch.Tensor | None = None,
        causal: bool = False,
    ) -> torch.Tensor:
        """Final-norm hidden states that predict the H*A action slots: (B, H*A, D).

        Default (OFT parallel decoding): zero slot embeddings + STOP, bidirectional attention. ``proprio`` may be
        None only for a model without proprio; pass ``slots`` (B, H*A, D) and ``causal=True`` for teacher forcing.
        """
        b, n = input_ids.shape[0], self.config.n_action_slots
        if slots is None:
            slots = torch.zeros(b, n, self.config.llm.hidden_size, dtype=self.dtype, device=input_ids.device)
        embeds, mask, start = self._sequence(pixel_values, input_ids, attention_mask, proprio, slots, stop=True)
        hidden = self._llm(embeds, mask, causal).last_hidden_state
        return self._readout(hidden, start, slots.shape[1])

    # ---- training -------------------------------------------------------------------------------------------
    def forward(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        proprio: torch.Tensor | None = None,
        actions: torch.Tensor | None = None,
        action_is_pad: torch.Tensor | None = None,
        keypose: torch.Tensor | None = None,
        keypose_mask: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Training forward.

        Args:
            pixel_values: (B, V*C, S, S) float from :class:`VLAProcessor`.
            input_ids, attention_mask: (B, T) right-padded prompt tokens starting with BOS.
            proprio: (B, P) normalized proprio (required when ``proprio_dim > 0``).
            actions: (B, H, A) NORMALIZED ground-truth chunk; required for the loss and for autoregressive tokens.
            action_is_pad: (B, H) bool, True for padded steps (excluded from loss and metrics).
            keypose, keypose_mask: (B, 2, 3) normalized next keyposes and (B, 2) bool validity (train.dataset);
                with ``keypose_aux`` > 0 their L1 (``keypose_l1``) is added to ``loss`` times ``keypose_aux`` in
                train mode only, so validation losses stay comparable with runs without it.

        Returns:
            ``actions_pred`` (B, H, A) float32 normalized; with ``actions`` also ``loss`` (L1 for the l1 head,
            flow matching's velocity MSE for the flow head,
            next-token cross entropy over action tokens for the tokens head), ``curr_action_l1`` (step 0) and
            ``future_actions_l1`` (steps 1..H-1), both on float32 normalized values (decoded bins for tokens).

        Raises:
            ValueError: shapes that do not fit the config, or left-padded prompts.
        """
        self._check(pixel_values, input_ids, attention_mask, proprio, need_proprio=True)
        cfg = self.config
        b = input_ids.shape[0]
        if actions is not None and actions.shape != (b, cfg.chunk_size, cfg.action_dim):
            raise ValueError(f"actions must be (B, {cfg.chunk_size}, {cfg.action_dim}), got {tuple(actions.shape)}")
        step_mask = self._step_mask(action_is_pad, b, input_ids.device)
        out: dict[str, torch.Tensor] = {}
        points = None
        if cfg.keypose_aux and keypose is not None and keypose_mask is not None:
            points = self.keypoint_encoder.view_keypoints(pixel_values.to(self.dtype), cfg.channels_per_view)
        with self._reusing_points(points):  # the tokens and the readout share one conv pass
            if cfg.action_head == "l1":
                pred = self.action_head(self.action_hidden_states(pixel_values, input_ids, attention_mask, proprio))
                out["actions_pred"] = pred.float()
                if actions is not None:
                    err = (pred.float() - actions.float()).abs()
                    out["loss"] = _masked_mean(err, step_mask)
            elif cfg.action_head == "flow":
                out.update(self._flow_forward(pixel_values, input_ids, attention_mask, proprio, actions, step_mask))
            else:
                out.update(self._token_forward(pixel_values, input_ids, attention_mask, proprio, actions, step_mask))
        if points is not None:
            out["keypose_l1"] = self.keypoint_encoder.keypose_loss(points, keypose, keypose_mask)
            if self.training and "loss" in out:
                out["loss"] = out["loss"] + cfg.keypose_aux * out["keypose_l1"]
        if actions is not None:
            err = (out["actions_pred"] - actions.float()).abs().detach()
            out["curr_action_l1"] = _masked_mean(err[:, :1], step_mask[:, :1])
            out["future_actions_l1"] = _masked_mean(err[:, 1:], step_mask[:, 1:])
        return out

    @contextlib.contextmanager
    def _reusing_points(self, points: torch.Tensor | None):
        """Within the block, :meth:`embed_images` uses these (B, V, 2K) keypoints instead of recomputing them."""
        self._given_points = points
        try:
            yield
        finally:
            self._given_points = None

    def _step_mask(self, action_is_pad, b, device) -> torch.Tensor:
        if action_is_pad is None:
            return torch.ones(b, self.config.chunk_size, dtype=torch.bool, device=device)
        if action_is_pad.shape != (b, self.config.chunk_size):
            raise ValueError(f"action_is_pad must be (B, {self.config.chunk_size}), got {tuple(action_is_pad.shape)}")
        return ~action_is_pad.to(device=device, dtype=torch.bool)

    def _flow_forward(self, pixel_values, input_ids, attention_mask, proprio, actions, step_mask) -> dict:
        """Flow head: the flow-matching loss; ``actions_pred`` is the one-step estimate while training and the
        K-step sample in eval mode (validation metrics measure what inference does)."""
        hidden = self.action_hidden_states(pixel_values, input_ids, attention_mask, proprio)
        if actions is None:
            return {"actions_pred": self.action_head.sample(hidden)}
        loss, estimate = self.action_head.loss(hidden, actions, step_mask)
        return {"loss": loss, "actions_pred": estimate if self.training else self.action_head.sample(hidden)}

    def _token_forward(self, pixel_values, input_ids, attention_mask, proprio, actions, step_mask) -> dict:
        cfg = self.config
        autoregressive = cfg.token_decoding == "autoregressive"
        if autoregressive and actions is None:
            raise ValueError(
                "the autoregressive tokens head needs `actions` for teacher forcing; "
                "use predict_action_chunk for inference"
            )
        labels = None
        if actions is not None:
            labels = actions_to_token_ids(actions, cfg.n_action_bins, cfg.action_token_end_id).reshape(
                actions.shape[0], -1
            )
        slots = self.embed_tokens(labels) if autoregressive else None
        hidden = self.action_hidden_states(
            pixel_values, input_ids, attention_mask, proprio, slots, causal=autoregressive
        )
        logits = self.language_model.lm_head(hidden).float()  # (B, H*A, vocab)
        ids = self._pick(logits, restrict=True)
        out = {"actions_pred": self._decode(ids)}
        if labels is not None:
            ce = F.cross_entropy(logits.transpose(1, 2), labels, reduction="none")  # (B, H*A)
            out["loss"] = _masked_mean(ce.reshape(*step_mask.shape, -1), step_mask)
        return out

    # ---- inference ------------------------------------------------------------------------------------------
    def _pick(self, logits: torch.Tensor, restrict: bool) -> torch.Tensor:
        if not restrict:
            return logits.argmax(-1)
        hi = self.config.action_token_end_id
        lo = hi - self.config.n_action_bins
        return logits[..., lo:hi].argmax(-1) + lo

    def _decode(self, ids: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        acts = token_ids_to_actions(ids, cfg.n_action_bins, cfg.action_token_end_id)
        return acts.reshape(ids.shape[0], -1, cfg.action_dim)

    @torch.no_grad()
    def predict_action_chunk(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        proprio: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, H, A) float32 NORMALIZED action chunk (no grad); any batch size, right-padded prompts.

        Token heads pick the best action token (argmax restricted to the ``n_action_bins`` action ids).
        """
        self._check(pixel_values, input_ids, attention_mask, proprio, need_proprio=True)
        cfg = self.config
        if cfg.action_head == "l1":
            hidden = self.action_hidden_states(pixel_values, input_ids, attention_mask, proprio)
            return self.action_head(hidden).float()
        if cfg.action_head == "flow":
            return self.action_head.sample(self.action_hidden_states(pixel_values, input_ids, attention_mask, proprio))
        if cfg.token_decoding == "parallel":
            hidden = self.action_hidden_states(pixel_values, input_ids, attention_mask, proprio)
            return self._decode(self._pick(self.language_model.lm_head(hidden).float(), restrict=True))
        ids = self.generate_action_tokens(pixel_values, input_ids, attention_mask, proprio)["token_ids"]
        return self._decode(ids)

    @torch.no_grad()
    def generate_action_tokens(
        self,
        pixel_values,
        input_ids,
        attention_mask,
        proprio=None,
        n_tokens=None,
        restrict_to_actions: bool = True,
        return_logits: bool = False,
    ) -> dict:
        """Greedy causal decoding with a KV cache (original OpenVLA ``predict_action``, batched).

        Args:
            n_tokens: tokens to generate (default H*A).
            restrict_to_actions: argmax over the action ids only; False reproduces HF ``generate`` (full vocab).
            return_logits: also return every step's full-vocabulary logits.

        Returns:
            ``token_ids`` (B, n) int64 and, with ``return_logits``, ``logits`` (B, n, vocab) float32.
        """
        from transformers import DynamicCache

        self._check(pixel_values, input_ids, attention_mask, proprio, need_proprio=False)
        n = n_tokens or self.config.n_action_slots
        embeds, mask, _ = self._sequence(pixel_values, input_ids, attention_mask, proprio, None, stop=False, left=True)
        pos = (mask.cumsum(1) - 1).clamp(min=0)
        cache = DynamicCache(config=self.language_model.config)
        hidden = self._llm(
            embeds, mask, True, position_ids=pos, past_key_values=cache, use_cache=True
        ).last_hidden_state
        ids, all_logits = [], []
        for step in range(n):
            logits = self.language_model.lm_head(hidden[:, -1]).float()
            choice = self._pick(logits, restrict_to_actions)
            ids.append(choice)
            if return_logits:
                all_logits.append(logits)
            if step + 1 == n:
                break
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            pos = pos[:, -1:] + 1
            hidden = self._llm(
                self.embed_tokens(choice[:, None]), mask, True, position_ids=pos, past_key_values=cache, use_cache=True
            ).last_hidden_state
        out = {"token_ids": torch.stack(ids, dim=1)}
        if return_logits:
            out["logits"] = torch.stack(all_logits, dim=1)
        return out


def _masked_mean(values: torch.Tensor, step_mask: torch.Tensor) -> torch.Tensor:
    """Mean of (B, H, ...) values over the steps where ``step_mask`` (B, H) is True (0 when none is)."""
    w = step_mask.to(values.dtype).reshape(*step_mask.shape, *([1] * (values.ndim - 2))).expand_as(values)
    return (values * w).sum() / w.sum().clamp(min=1.0)
