"""The OpenVLA-architecture VLA rebuilt on current transformers (no remote code, no timm).

Modules, one owner per concept (import what you need; this package imports nothing heavy at import time):
    config           VLAConfig, presets ``tiny`` / ``openvla-7b``; fields marked ``knob()`` become train flags
    vision           fused DINOv2 + SigLIP towers (transformers Dinov2WithRegistersModel, SiglipVisionModel)
    heads            projector, proprio projector, L1 action head, FiLM, action-token bins
    model            VLA (vision towers -> projector -> Llama -> L1 head or action tokens)
    processor        VLAProcessor (images + instructions -> model inputs)
    tokenizer        byte-level BPE for tiny models
    weights          tensors into a VLA with exact key/shape checks; CheckpointError
    run_format       our run checkpoints (RUN/checkpoints/step_N): layout, writer, manifest, reader, digest
    openvla_format   OpenVLA-format directories: read and export (shards, OFT head files)
    openvla_config   OpenVLA config.json <-> VLAConfig
    keymap           OpenVLA tensor names <-> this package's parameter names
    adapt            an OpenVLA-format base adapted to a fine-tune's config (``vla train --base``)
    lora             peft LoRA: apply, count, save/load adapters, merge; heads save/load
    check            ``vla check-checkpoint`` (config in check_config)
"""
