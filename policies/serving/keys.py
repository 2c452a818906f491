"""Observation key conventions on the wire, and their mapping to :class:`policies.base.Observation`.

Two conventions are understood (picked per request by its state key: ``proprio`` -> native, ``state`` -> ALOHA):

============================  ==============================  ===============================================
ours (``native``)             ALOHA (``aloha``, openpi)       contents
============================  ==============================  ===============================================
``images["head"]``            ``images["cam_high"]``          head camera, uint8 RGB
``images["left_wrist"]``      ``images["cam_left_wrist"]``    left wrist camera
``images["right_wrist"]``     ``images["cam_right_wrist"]``   right wrist camera
``images["low"]``             ``images["cam_low"]``           low front camera
``proprio`` (14,)             ``state`` (14,)                 per arm [x, y, z, roll, pitch, yaw, gripper],
                                                              left arm first (``envs.layout``); float
``instruction`` str           ``prompt`` str                  the task instruction
============================  ==============================  ===============================================

The ALOHA names are those of openpi's ``src/openpi/policies/aloha_policy.py`` (``AlohaInputs``: cameras
``cam_high, cam_low, cam_left_wrist, cam_right_wrist``, keys ``state`` and ``prompt``; its example observation
sends CHW uint8 images). Only the *names* are mapped: our 14 numbers are TCP poses in the world frame, not the
ALOHA robot's joint angles, so a model served under the ALOHA names must have been trained on our layout.

Accepted on input, in either convention:

* images HWC ``(H, W, 3)`` or CHW ``(3, H, W)`` uint8 at any size, resized to the policy's square image size
  (``PolicyMetadata.image_size``; OpenCV area interpolation when shrinking, bilinear when growing; a non-square
  frame is stretched); cameras the policy does not read are ignored;
* unbatched (state ``(14,)``, images 3-D, one instruction) or batched (state ``(B, 14)``, images 4-D with the same
  B, a list of B instructions or one instruction for all).

Every problem raises :class:`ObservationError` with one line naming the key and the expected vs actual value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np

from envs.layout import CAMERAS
from policies.base import Observation

KeyConvention = Literal["native", "aloha"]
KEY_CONVENTIONS: tuple[str, ...] = ("native", "aloha")
ALOHA_CAMERAS: dict[str, str] = {
    "head": "cam_high",
    "left_wrist": "cam_left_wrist",
    "right_wrist": "cam_right_wrist",
    "low": "cam_low",
}
"""Our camera name -> openpi's ALOHA camera name."""
STATE_KEY = {"native": "proprio", "aloha": "state"}
INSTRUCTION_KEY = {"native": "instruction", "aloha": "prompt"}


class ObservationError(ValueError):
    """An observation on the wire that does not fit the policy (one line: key, expected, actual)."""


def camera_key(camera: str, keys: KeyConvention) -> str:
    """The wire name of our camera ``camera`` under ``keys`` (``head`` -> ``cam_high`` for ALOHA)."""
    return ALOHA_CAMERAS[camera] if keys == "aloha" else camera


def detect_convention(raw: Mapping[str, Any]) -> KeyConvention:
    """``native`` when ``raw`` has ``proprio``, ``aloha`` when it has ``state``.

    Raises:
        ObservationError: ``raw`` is not a map, or has both or neither key.
    """
    if not isinstance(raw, Mapping):
        raise ObservationError(f"observation: expected a map, got {type(raw).__name__}")
    has = [k for k in ("proprio", "state") if k in raw]
    if len(has) != 1:
        raise ObservationError(
            f"observation: expected exactly one of 'proprio' (native keys) or 'state' (ALOHA "
            f"keys), got keys {sorted(map(str, raw))}"
        )
    return "native" if has[0] == "proprio" else "aloha"


def _state(raw: Mapping[str, Any], key: str, dim: int) -> tuple[np.ndarray, bool]:
    value = raw[key]
    arr = np.asarray(value) if isinstance(value, (list, tuple, np.ndarray)) else None
    if arr is None or arr.dtype.kind not in "fiu":
        kind = type(value).__name__ if arr is None else str(arr.dtype)
        raise ObservationError(f"{key}: expected a float array of shape ({dim},) or (B, {dim}), got {kind}")
    if arr.ndim not in (1, 2) or arr.shape[-1] != dim or (arr.ndim == 2 and arr.shape[0] == 0):
        raise ObservationError(f"{key}: expected shape ({dim},) or (B, {dim}) with B >= 1, got {arr.shape}")
    arr = arr.astype(np.float32)
    bad = ~np.isfinite(arr)
    if bad.any():
        where = [int(i) for i in np.argwhere(bad)[0]]
        raise ObservationError(f"{key}: expected finite values, got {arr[tuple(where)]} at index {where}")
    return (arr if arr.ndim == 2 else arr[None]), arr.ndim == 2


def _instructions(raw: Mapping[str, Any], key: str, batch: int, batched: bool) -> list[str]:
    if key not in raw:
        raise ObservationError(f"{key}: missing (expected a string); got keys {sorted(map(str, raw))}")
    value = raw[key]
    if isinstance(value, (str, np.str_)):
        return [str(value)] * batch
    items = list(value) if isinstance(value, (list, tuple, np.ndarray)) else None
    if items is None or not all(isinstance(s, (str, np.str_)) for s in items) or len(items) != batch:
        got = type(value).__name__ if items is None else f"{len(items)} item(s) {[type(s).__name__ for s in items][:3]}"
        want = f"a string or a list of {batch} strings" if batched else "a string"
        raise ObservationError(f"{key}: expected {want}, got {got}")
    return [str(s) for s in items]


def _image(value: Any, key: str, batch: int, batched: bool, size: int | None) -> np.ndarray:
    want = "(B, H, W, 3) or (B, 3, H, W)" if batched else "(H, W, 3) or (3, H, W)"
    if not isinstance(value, np.ndarray):
        raise ObservationError(f"{key}: expected a uint8 array {want}, got {type(value).__name__}")
    if value.dtype != np.uint8:
        raise ObservationError(f"{key}: expected dtype uint8, got {value.dtype}")
    img = value if batched else value[None]
    if img.ndim != 4 or 3 not in (img.shape[-1], img.shape[1]) or min(img.shape[1:]) == 0:
        raise ObservationError(f"{key}: expected shape {want}, got {value.shape}")
    if img.shape[0] != batch:
        raise ObservationError(f"{key}: expected batch size {batch} (from the state), got {img.shape[0]}")
    if img.shape[-1] != 3:  # CHW -> HWC (openpi's ALOHA example observation sends CHW)
        img = img.transpose(0, 2, 3, 1)
    if size is not None and img.shape[1:3] != (size, size):
        img = resize_images(img, size)
    return np.ascontiguousarray(img)


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """(B, H, W, 3) uint8 -> (B, size, size, 3) uint8 (area interpolation when shrinking, else bilinear)."""
    import cv2

    shrink = images.shape[1] * images.shape[2] > size * size
    interp = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    return np.stack([cv2.resize(np.ascontiguousarray(im), (size, size), interpolation=interp) for im in images])


def to_observation(
    raw: Mapping[str, Any], cameras: Sequence[str], image_size: int | None = None, state_dim: int = 14
) -> tuple[Observation, bool]:
    """Map a decoded request onto an :class:`Observation` for a policy reading ``cameras``.

    Args:
        raw: the decoded msgpack map (either key convention, see the module docstring).
        cameras: our camera names the policy reads (``PolicyMetadata.cameras``).
        image_size: the policy's square image side in px, or None to keep the sizes sent.
        state_dim: length of the state vector (14).

    Returns:
        (observation with (B, S, S, 3) uint8 images, (B, 14) float32 proprio and B instructions, batched) where
        ``batched`` says whether the request had a leading batch dimension (the reply then keeps it).

    Raises:
        ObservationError: a missing key or camera, a wrong dtype or shape, a NaN/Inf state, mismatched batch sizes.
    """
    keys = detect_convention(raw)
    proprio, batched = _state(raw, STATE_KEY[keys], state_dim)
    batch = proprio.shape[0]
    instruction = _instructions(raw, INSTRUCTION_KEY[keys], batch, batched)
    images_in = raw.get("images", {}) if cameras else {}
    if not isinstance(images_in, Mapping):
        raise ObservationError(f"images: expected a map camera -> image, got {type(images_in).__name__}")
    images = {}
    for cam in cameras:
        name = camera_key(cam, keys)
        if name not in images_in:
            wanted = [camera_key(c, keys) for c in cameras]
            raise ObservationError(
                f"images.{name}: missing camera (the policy reads {wanted}); got {sorted(map(str, images_in))}"
            )
        images[cam] = _image(images_in[name], f"images.{name}", batch, batched, image_size)
    return Observation(images=images, proprio=proprio, instruction=instruction), batched


def from_observation(obs: Observation, keys: KeyConvention, index: int | None = None, chw: bool = False) -> dict:
    """The wire map of ``obs`` under ``keys``: sample ``index`` unbatched, or the whole batch when None.

    Args:
        obs: (B, H, W, 3) uint8 images of our cameras, (B, 14) proprio, B instructions.
        keys: ``native`` or ``aloha``.
        index: which sample to send unbatched (state (14,), images 3-D, one instruction string), or None for all.
        chw: send images as (3, H, W) (openpi's ALOHA policies expect CHW) instead of (H, W, 3).

    Raises:
        ValueError: an unknown key convention or a camera outside ``envs.layout.CAMERAS``.
    """
    if keys not in KEY_CONVENTIONS:
        raise ValueError(f"keys: expected one of {list(KEY_CONVENTIONS)}, got {keys!r}")
    pick = (lambda a: np.asarray(a)[index]) if index is not None else np.asarray
    images = {}
    for cam, img in obs.images.items():
        if cam not in CAMERAS:
            raise ValueError(f"images: unknown camera {cam!r}; known: {list(CAMERAS)}")
        arr = pick(img)
        if chw:
            arr = np.moveaxis(arr, -1, -3)
        images[camera_key(cam, keys)] = np.ascontiguousarray(arr, dtype=np.uint8)
    instruction = list(obs.instruction)
    return {
        "images": images,
        STATE_KEY[keys]: np.ascontiguousarray(pick(obs.proprio), dtype=np.float32),
        INSTRUCTION_KEY[keys]: instruction[index] if index is not None else instruction,
    }
