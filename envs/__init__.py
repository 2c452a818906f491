"""Dual-arm ManiSkill tasks behind one observation/action contract (see ``envs.layout``).

Heavy imports (ManiSkill, SAPIEN, torch) happen inside :func:`make_env` so ``import envs`` stays cheap.
"""
