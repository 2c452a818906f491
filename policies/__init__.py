"""Policies: the protocol (``policies.base``), baselines, and the OpenVLA-architecture VLA (``policies.openvla``)."""
