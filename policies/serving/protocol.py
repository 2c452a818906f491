"""The wire codec of the openpi policy protocol: msgpack with numpy arrays, and nothing that can run code.

Protocol facts (openpi ``packages/openpi-client/src/openpi_client/msgpack_numpy.py``, read in openpi-client 0.1.2):

* a numpy array is packed as the map ``{b"__ndarray__": True, b"data": arr.tobytes(), b"dtype": arr.dtype.str,
  b"shape": arr.shape}`` (bytes keys; ``dtype.str`` such as ``"<f4"``; the shape a msgpack array);
* a numpy scalar (``np.generic``) as ``{b"__npgeneric__": True, b"data": value.item(), b"dtype": dtype.str}``;
* everything else is plain msgpack (``use_bin_type=True``, strings as str, ``raw=False`` on decode);
* arrays of dtype kind ``V`` (void/structured), ``O`` (object) and ``c`` (complex) are refused when packing.

:func:`packb` produces exactly the bytes openpi's ``msgpack_numpy.packb`` produces for the same object (tested), so
either side can be ours or openpi's. Decoding is stricter than openpi's: only dtype kinds ``b i u f U`` are
accepted, the byte count must match ``shape`` x itemsize exactly, and any malformed frame raises
:class:`ProtocolError` with a one-line reason. There is no pickle fallback anywhere (the reason openpi does not
use the ``msgpack-numpy`` package is that it falls back to pickle for object arrays).

Decoded arrays are read-only views of the received bytes (as openpi's ``np.ndarray(buffer=...)``); copy before
writing to them.
"""

from __future__ import annotations

import math
from typing import Any

import msgpack
import numpy as np

NDARRAY_KEY = b"__ndarray__"
NPGENERIC_KEY = b"__npgeneric__"
REFUSED_PACK_KINDS = frozenset("VOc")
"""dtype kinds openpi's ``pack_array`` refuses (structured, object, complex)."""
ALLOWED_DECODE_KINDS = frozenset("biufU")
"""dtype kinds accepted on decode: bool, signed/unsigned int, float, unicode string."""


class ProtocolError(ValueError):
    """A frame that is not a well-formed openpi-protocol message (the message says what is wrong)."""


def _pack_hook(obj: Any) -> Any:
    if isinstance(obj, (np.ndarray, np.generic)) and obj.dtype.kind in REFUSED_PACK_KINDS:
        raise ProtocolError(f"cannot send a numpy array of dtype {obj.dtype} (kinds V, O and c are refused)")
    if isinstance(obj, np.ndarray):
        return {NDARRAY_KEY: True, b"data": obj.tobytes(), b"dtype": obj.dtype.str, b"shape": obj.shape}
    if isinstance(obj, np.generic):
        return {NPGENERIC_KEY: True, b"data": obj.item(), b"dtype": obj.dtype.str}
    raise TypeError(f"cannot serialize an object of type {type(obj).__name__}")


def packb(obj: Any) -> bytes:
    """msgpack bytes of ``obj`` (dicts, lists, str, bytes, numbers, None, numpy arrays and scalars).

    Raises:
        ProtocolError: a numpy array of a refused dtype kind (V, O, c).
        TypeError: any other object msgpack cannot represent.
    """
    return msgpack.packb(obj, default=_pack_hook)


def _dtype(value: Any) -> np.dtype:
    if not isinstance(value, str):
        raise ProtocolError(f"array dtype must be a string such as '<f4', got {type(value).__name__}")
    try:
        dtype = np.dtype(value)
    except TypeError as err:
        raise ProtocolError(f"unknown array dtype {value!r}") from err
    if dtype.kind not in ALLOWED_DECODE_KINDS or dtype.fields is not None:
        raise ProtocolError(f"array dtype {value!r} is not allowed (allowed kinds: bool, int, uint, float, str)")
    return dtype


def _decode_ndarray(obj: dict) -> np.ndarray:
    data, shape = obj.get(b"data"), obj.get(b"shape")
    dtype = _dtype(obj.get(b"dtype"))
    if not isinstance(data, bytes):
        raise ProtocolError(f"array data must be bytes, got {type(data).__name__}")
    if not isinstance(shape, (list, tuple)) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise ProtocolError(f"array shape must be a list of non-negative integers, got {shape!r}")
    expected = math.prod(shape) * dtype.itemsize
    if len(data) != expected:
        raise ProtocolError(
            f"array of shape {list(shape)} and dtype {dtype.str} needs {expected} bytes, got {len(data)}"
        )
    return np.frombuffer(data, dtype=dtype).reshape(shape)


def _decode_npgeneric(obj: dict) -> np.generic:
    dtype = _dtype(obj.get(b"dtype"))
    try:
        return dtype.type(obj.get(b"data"))
    except (TypeError, ValueError, OverflowError) as err:
        raise ProtocolError(f"numpy scalar of dtype {dtype.str}: bad value {obj.get(b'data')!r}") from err


def _unpack_hook(obj: dict) -> Any:
    if NDARRAY_KEY in obj:
        return _decode_ndarray(obj)
    if NPGENERIC_KEY in obj:
        return _decode_npgeneric(obj)
    return obj


def unpackb(data: bytes) -> Any:
    """Decode one msgpack frame, turning openpi's array / scalar maps back into numpy.

    Raises:
        ProtocolError: not bytes, not valid msgpack (truncated, extra bytes, bad map keys), or a malformed array.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ProtocolError(f"expected a binary msgpack frame, got {type(data).__name__}")
    try:
        return msgpack.unpackb(data, object_hook=_unpack_hook)
    except ProtocolError:
        raise
    except (ValueError, TypeError, msgpack.UnpackException) as err:
        # msgpack's ExtraData / FormatError / StackError and invalid map keys all land here.
        raise ProtocolError(f"undecodable msgpack frame ({len(data)} bytes): {type(err).__name__}: {err}") from err
