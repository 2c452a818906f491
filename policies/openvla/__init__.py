"""The OpenVLA-architecture VLA rebuilt on current transformers (no remote code, no timm).

Modules (import what you need; this package imports nothing heavy at import time):
    config       VLAConfig, presets ``tiny`` / ``openvla-7b``
    model        VLA (vision towers -> projector -> Llama -> L1 head or action tokens)
    processor    VLAProcessor (images + instructions -> model inputs)
    tokenizer    byte-level BPE for tiny models
    checkpoint   OpenVLA-format loading, native save/load
    lora         peft LoRA: apply, count, save/load adapters, merge; heads save/load
    check        ``vla check-checkpoint``
"""
