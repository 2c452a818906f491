"""Fine-tuning the VLA on recorded dual-arm HDF5 episodes.

Modules, one owner per concept:
    train_config     TrainConfig (``vla train`` flags, in groups) and MergeLoraConfig
    config           DataConfig and DataCheckConfig
    optim_config     OptimConfig (AdamW steps, lr schedule, per-module lr scales), re-exported by train_config
    episodes         episode folders: find, validate (per-file checks in episode_checks), DatasetSummary
    datacheck        ``vla data check``
    stats            train/val split and normalization statistics
    dataset          the PyTorch dataset (one sample = images at t + an action chunk)
    sampler          deterministic, exactly resumable sample order (one process or DDP)
    model_setup      model, processor, optimizer and lr schedule of a run
    train_step       one optimizer step, validation, train-metric logging
    trainer          the loop: setup, cadence, checkpoints; ``train()``
    checkpointing    writing run checkpoints, ``last``, rotation, resume candidates, ``vla merge-lora``
    resume           ``--resume``: which checkpoint, what may change, restoring state
    logging_utils    TensorBoard, metrics.jsonl, wandb
"""
