"""The bf16 probe and the precision rule: bf16 only where this machine runs it faster than float32."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import pytest

from envs import machine


@pytest.fixture
def fake_speed(monkeypatch, tmp_path):
    """Make the probe measure given (float32 ms, bf16 ms); counts how often it measured."""
    monkeypatch.setenv("VLA_CACHE_DIR", str(tmp_path))
    calls = []

    def install(fp32_ms: float, bf16_ms: float):
        import torch

        def fake(dtype, threads):
            calls.append(dtype)
            return fp32_ms if dtype == torch.float32 else bf16_ms

        monkeypatch.setattr(machine, "_time_matmul", fake)
        return calls

    return install


def test_auto_is_float32_where_bf16_is_slow_and_explicit_bf16_warns(fake_speed):
    fake_speed(4.7, 352.0)  # the AVX2-only EPYC of the issue
    assert machine.resolve_precision("auto", "cpu")[0] == "no"
    with pytest.warns(UserWarning, match=r"bf16 was asked for on a CPU where it is slow: .*\(74\.89x"):
        assert machine.resolve_precision("bf16", "cpu")[0] == "bf16"
    assert machine.resolve_precision("no", "cpu") == ("no", "float32 requested")


def test_auto_is_bf16_where_bf16_is_fast(fake_speed):
    fake_speed(1.7, 0.27)  # AMX
    precision, reason = machine.resolve_precision("auto", "cpu")
    assert precision == "bf16" and "0.16x" in reason
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        machine.resolve_precision("bf16", "cpu")  # no warning where bf16 is fast


def test_a_tie_is_not_a_win(fake_speed):
    fake_speed(1.0, 0.95)  # autocast adds casts: bf16 must be clearly faster
    assert machine.resolve_precision("auto", "cpu")[0] == "no"


def test_probe_is_cached_per_machine_and_thread_count(fake_speed, tmp_path):
    import torch

    calls = fake_speed(4.0, 2.0)
    first = machine.bf16_probe()
    second = machine.bf16_probe()
    assert not first.cached and second.cached and len(calls) == 2, "measured once, then read from the cache"
    assert (second.fp32_ms, second.bf16_ms) == (4.0, 2.0)
    cache = json.loads((tmp_path / machine.PROBE_FILE).read_text())
    (entry,) = cache.values()
    assert entry["cpu"] == machine.cpu_info()["model"] and entry["threads"] == torch.get_num_threads()
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(threads + 1)
        assert not machine.bf16_probe().cached, "another thread count is another measurement"
    finally:
        torch.set_num_threads(threads)
    (tmp_path / machine.PROBE_FILE).write_text("{not json")
    assert not machine.bf16_probe().cached, "a broken cache is measured again, not an error"


def test_an_isa_cap_is_another_machine(fake_speed, monkeypatch):
    for name in machine.ISA_CAP_VARS:
        monkeypatch.delenv(name, raising=False)
    calls = fake_speed(4.0, 2.0)
    machine.bf16_probe()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert not machine.bf16_probe().cached and len(calls) == 4, "a oneDNN ISA cap changes bf16 speed: re-measured"
    assert machine.isa_caps() == {"ONEDNN_MAX_CPU_ISA": "AVX2"}


def test_the_real_probe_picks_float32_when_onednn_is_capped_at_avx2(tmp_path):
    """Unmocked, in a fresh process: oneDNN limited to AVX2 has no fast bf16 matmul on either CPU kind (the
    AVX2-only EPYC of the issue, or an AVX-512/AMX machine emulating it), so ``auto`` must mean float32."""
    code = "from envs.machine import resolve_precision; print(resolve_precision('auto', 'cpu')[0])"
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "VLA_CACHE_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "no", out.stderr


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="precision must be auto, bf16 or no, got 'fp16'"):
        machine.resolve_precision("fp16", "cpu")
    with pytest.raises(ValueError, match="device must be cpu or cuda, got 'tpu'"):
        machine.resolve_precision("auto", "tpu")


def test_trainer_and_checkpoint_policy_follow_the_probe(fake_speed, tmp_path):
    from policies.checkpoint import resolve_dtype
    from train.train_config import TrainConfig
    from train.trainer import _make_accelerator

    fake_speed(4.7, 352.0)
    cfg = TrainConfig.from_flat(
        data=tmp_path, out=tmp_path / "run", mixed_precision="auto", device="cpu", progress=False
    )
    assert str(_make_accelerator(cfg).mixed_precision) == "no"
    assert resolve_dtype("auto", "cpu") == "float32" and resolve_dtype("float32", "cpu") == "float32"
    machine_cache = tmp_path / machine.PROBE_FILE
    machine_cache.unlink()
    fake_speed(1.7, 0.27)
    assert str(_make_accelerator(cfg).mixed_precision) == "bf16"
    assert resolve_dtype("auto", "cpu") == "bfloat16"
    with pytest.raises(ValueError, match="dtype must be one of"):
        resolve_dtype("half", "cpu")


def test_cpu_info_names_the_model_and_simd_flags():
    info = machine.cpu_info()
    assert info["model"] and info["cores"] >= 1
    assert set(info["flags"]) <= set(machine.SIMD_FLAGS)
