"""The wire codec (byte-compatible with openpi's msgpack_numpy, strict, no pickle) and the observation key mapping
(native and ALOHA keys, HWC/CHW, any size, batched/unbatched, one-line errors naming the key)."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest

from policies.serving.keys import ObservationError, from_observation, to_observation
from policies.serving.protocol import ProtocolError, packb, unpackb

openpi_msgpack = pytest.importorskip("openpi_client.msgpack_numpy")

CAMS = ("head", "left_wrist")


def _message() -> dict:
    rng = np.random.default_rng(0)
    return {
        "images": {"cam_high": rng.integers(0, 256, (3, 8, 6), dtype=np.uint8)},
        "state": rng.normal(size=14).astype(np.float32),
        "batch": rng.normal(size=(2, 3)).astype(np.float64),
        "ids": np.arange(5, dtype=np.int64),
        "flags": np.array([True, False]),
        "scalar": np.float32(1.5),
        "count": np.int16(-3),
        "prompt": "pick up the cube",
        "nested": [1, 2.5, None, b"raw", {"k": np.uint8(7)}],
    }


def _assert_same(a, b) -> None:
    if isinstance(a, dict):
        assert set(a) == set(b)
        for k in a:
            _assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _assert_same(x, y)
    elif isinstance(a, (np.ndarray, np.generic)):
        assert type(a) is type(b) and a.dtype == b.dtype and np.shape(a) == np.shape(b)
        np.testing.assert_array_equal(a, b)
    else:
        assert a == b and type(a) is type(b)


def test_packb_is_byte_identical_to_openpi_and_both_directions_decode() -> None:
    msg = _message()
    ours, theirs = packb(msg), openpi_msgpack.packb(msg)
    assert ours == theirs, "our frames must be exactly openpi's msgpack_numpy frames"
    _assert_same(msg, unpackb(theirs))
    _assert_same(msg, openpi_msgpack.unpackb(ours))
    raw = msgpack.unpackb(ours, raw=False)  # the documented layout: bytes keys
    assert raw["state"][b"__ndarray__"] is True and raw["state"][b"dtype"] == "<f4" and raw["state"][b"shape"] == [14]
    assert raw["scalar"] == {b"__npgeneric__": True, b"data": 1.5, b"dtype": "<f4"}


@pytest.mark.parametrize(
    "array", [np.array([object()], dtype=object), np.zeros(2, np.complex64), np.zeros(2, dtype=[("a", "<i4")])]
)
def test_refused_dtypes_are_not_sent(array) -> None:
    with pytest.raises(ProtocolError, match="refused"):
        packb({"x": array})


def _frame(**fields) -> bytes:
    base = {b"__ndarray__": True, b"data": b"\x00" * 8, b"dtype": "<f4", b"shape": [2]}
    base.update({k.encode(): v for k, v in fields.items()})
    return msgpack.packb({"x": base})


@pytest.mark.parametrize(
    "frame, message",
    [
        (b"\xc1", "undecodable"),  # reserved msgpack byte
        (packb({"a": 1})[:-1], "undecodable"),  # truncated
        (packb({"a": 1}) + b"\x00", "undecodable"),  # trailing bytes
        (msgpack.packb({1.5: "float key"}), "undecodable"),  # map key msgpack refuses
        (_frame(dtype="|O"), "not allowed"),  # object array: no pickle, no objects
        (_frame(dtype="|V8"), "not allowed"),
        (_frame(dtype="nonsense"), "unknown array dtype"),
        (_frame(dtype=5), "dtype must be a string"),
        (_frame(data=b"\x00" * 7), "needs 8 bytes, got 7"),
        (_frame(data=b"\x00" * 12), "needs 8 bytes, got 12"),
        (_frame(shape=[-2]), "non-negative"),
        (_frame(shape="2"), "non-negative"),
        (_frame(data="text"), "data must be bytes"),
    ],
)
def test_malformed_frames_raise_protocol_error(frame, message) -> None:
    with pytest.raises(ProtocolError, match=message):
        unpackb(frame)


def test_text_is_not_a_frame() -> None:
    with pytest.raises(ProtocolError, match="expected a binary msgpack frame, got str"):
        unpackb("hello")


def _native(n=None, size=32, seed=0):
    rng = np.random.default_rng(seed)
    lead = () if n is None else (n,)
    return {
        "images": {c: rng.integers(0, 256, (*lead, size, size, 3), dtype=np.uint8) for c in CAMS + ("low",)},
        "proprio": rng.normal(size=(*lead, 14)),
        "instruction": "lift" if n is None else ["lift"] * n,
    }


def test_native_and_aloha_chw_map_to_the_same_observation() -> None:
    raw = _native()
    aloha = {
        "images": {
            "cam_high": raw["images"]["head"].transpose(2, 0, 1),
            "cam_left_wrist": raw["images"]["left_wrist"].transpose(2, 0, 1),
        },
        "state": raw["proprio"],
        "prompt": "lift",
    }
    a, batched_a = to_observation(raw, CAMS, 32)
    b, batched_b = to_observation(aloha, CAMS, 32)
    assert not batched_a and not batched_b
    assert set(a.images) == set(CAMS), "cameras the policy does not read are dropped"
    for c in CAMS:
        assert a.images[c].shape == (1, 32, 32, 3) and a.images[c].dtype == np.uint8
        np.testing.assert_array_equal(a.images[c], b.images[c])
        np.testing.assert_array_equal(a.images[c][0], raw["images"][c])
    assert a.proprio.dtype == np.float32 and a.proprio.shape == (1, 14)
    np.testing.assert_array_equal(a.proprio, b.proprio)
    assert list(a.instruction) == list(b.instruction) == ["lift"]


def test_batched_requests_keep_their_batch_and_images_are_resized() -> None:
    raw = _native(n=3, size=48)
    obs, batched = to_observation(raw, CAMS, 32)
    assert batched and obs.batch_size == 3 and obs.images["head"].shape == (3, 32, 32, 3)
    assert list(obs.instruction) == ["lift"] * 3
    flat = np.full((1, 64, 48, 3), 77, np.uint8)  # non-square, any size: resized to 32 x 32, values kept
    obs, _ = to_observation(
        {"images": {"head": flat[0], "left_wrist": flat[0]}, "proprio": np.zeros(14), "instruction": "x"}, CAMS, 32
    )
    assert obs.images["head"].shape == (1, 32, 32, 3) and (obs.images["head"] == 77).all()
    kept, _ = to_observation(raw, CAMS, None)
    assert kept.images["head"].shape == (3, 48, 48, 3), "no image size: frames kept as sent"


def test_mapping_does_not_touch_the_request() -> None:
    raw = _native()
    before = {c: v.copy() for c, v in raw["images"].items()}, raw["proprio"].copy()
    to_observation(raw, CAMS, 16)
    for c, v in before[0].items():
        np.testing.assert_array_equal(raw["images"][c], v)
    np.testing.assert_array_equal(raw["proprio"], before[1])


def _with(path: str, value):
    raw = _native()
    if path.startswith("images."):
        cam = path.split(".", 1)[1]
        if value is None:
            del raw["images"][cam]
        else:
            raw["images"][cam] = value
    elif value is None:
        del raw[path]
    else:
        raw[path] = value
    return raw


@pytest.mark.parametrize(
    "raw, message",
    [
        (_with("images.left_wrist", None), r"images\.left_wrist: missing camera"),
        (_with("images.head", np.zeros((32, 32, 3), np.float32)), r"images\.head: expected dtype uint8, got float32"),
        (
            _with("images.head", np.zeros((32, 32), np.uint8)),
            r"images\.head: expected shape \(H, W, 3\) or \(3, H, W\), got \(32, 32\)",
        ),
        (_with("images.head", np.zeros((32, 32, 4), np.uint8)), r"images\.head: expected shape"),
        (_with("images.head", [[1, 2]]), r"images\.head: expected a uint8 array"),
        (_with("proprio", np.zeros(7)), r"proprio: expected shape \(14,\) or \(B, 14\)"),
        (_with("proprio", np.array(["a"] * 14)), r"proprio: expected a float array"),
        (
            _with("proprio", np.where(np.arange(14) == 3, np.nan, 0.0)),
            r"proprio: expected finite values, got nan at index \[3\]",
        ),
        (_with("instruction", None), r"instruction: missing"),
        (_with("instruction", 5), r"instruction: expected a string, got int"),
        (_with("images", "not a map"), r"images: expected a map"),
        ({"images": {}, "proprio": np.zeros(14), "state": np.zeros(14)}, r"exactly one of 'proprio'.*or 'state'"),
        ([1, 2], r"observation: expected a map, got list"),
    ],
)
def test_bad_observations_name_the_key(raw, message) -> None:
    with pytest.raises(ObservationError, match=message):
        to_observation(raw, CAMS, 32)


def test_aloha_errors_use_aloha_names_and_batch_mismatch_is_caught() -> None:
    with pytest.raises(ObservationError, match=r"images\.cam_left_wrist: missing camera .*\['cam_high'\]"):
        to_observation(
            {"images": {"cam_high": np.zeros((3, 8, 8), np.uint8)}, "state": np.zeros(14), "prompt": "x"}, CAMS, 32
        )
    raw = _native(n=2)
    raw["images"]["head"] = raw["images"]["head"][:1]
    with pytest.raises(ObservationError, match=r"images\.head: expected batch size 2 \(from the state\), got 1"):
        to_observation(raw, CAMS, 32)
    raw = _native(n=2)
    raw["instruction"] = ["a", "b", "c"]
    with pytest.raises(ObservationError, match=r"instruction: expected a string or a list of 2 strings, got 3"):
        to_observation(raw, CAMS, 32)


def test_from_observation_round_trips_through_the_wire_in_both_conventions() -> None:
    obs, _ = to_observation(_native(n=2), CAMS, 32)
    for keys, chw in (("native", False), ("aloha", True)):
        for index in (None, 1):
            wire = unpackb(packb(from_observation(obs, keys, index=index, chw=chw)))
            back, batched = to_observation(wire, CAMS, 32)
            assert batched == (index is None)
            rows = slice(None) if index is None else slice(1, 2)
            for c in CAMS:
                np.testing.assert_array_equal(back.images[c], obs.images[c][rows])
            np.testing.assert_array_equal(back.proprio, obs.proprio[rows])
    aloha = from_observation(obs, "aloha", index=0, chw=True)
    assert set(aloha) == {"images", "state", "prompt"} and set(aloha["images"]) == {"cam_high", "cam_left_wrist"}
    assert aloha["images"]["cam_high"].shape == (3, 32, 32) and aloha["prompt"] == "lift"
