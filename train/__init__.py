"""Fine-tuning the VLA on recorded dual-arm HDF5 episodes."""
