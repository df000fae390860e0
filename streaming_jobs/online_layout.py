"""Feast 0.67's Redis online layout, encoded and decoded by hand, for writers and readers alike.

The streaming job writes session features straight into Redis (Feast's push path cannot guard
against a replayed batch regressing a session), and the serving path reads user, product and
session features in one pipelined round trip. Both must agree byte for byte with what
`FeatureStore.write_to_online_store` writes and `get_online_features` reads; the tests compare
against Feast itself. No Feast import here: `import feast` costs seconds.

Layout (entity_key_serialization_version 3, `feast/infra/key_encoding_utils.py` and
`feast/infra/online_stores/redis.py`):
- one Redis hash per entity key; the key is
  ``u32(1) u32(STRING=2) u32(len(join_key)) join_key u32(STRING=2) u32(len(value)) value project``
  (u32 little-endian, the project name appended as plain bytes);
- a feature's field is the little-endian u32 of ``mmh3("<view>:<feature>")`` (unsigned);
- ``_ts:<view>`` holds a serialized ``google.protobuf.Timestamp`` of the row's event time;
- values are serialized ``feast.types.Value`` messages (a oneof, so zero values are still
  written); a null is an empty message (``b""``).
"""

from __future__ import annotations

import struct
from typing import Any

import mmh3

STRING_TYPE = 2  # feast.types.Value.ValueType.STRING
DEFAULT_PROJECT = "intent"

# feast.types.Value field numbers of the scalar members of its `val` oneof
_BYTES, _STRING, _INT32, _INT64, _DOUBLE, _FLOAT, _BOOL, _UNIX_TS = 1, 2, 3, 4, 5, 6, 7, 8
_TAG_INT64 = bytes([(_INT64 << 3) | 0])
_TAG_DOUBLE = bytes([(_DOUBLE << 3) | 1])
_TAG_STRING = bytes([(_STRING << 3) | 2])
_U32 = struct.Struct("<I")
_F64 = struct.Struct("<d")
_F32 = struct.Struct("<f")


def entity_key(join_key: str, value: str, project: str = DEFAULT_PROJECT) -> bytes:
    """The Redis key of one entity with a single string join key (e.g. session_id=...)."""
    k = join_key.encode("utf-8")
    v = value.encode("utf-8")
    return b"".join((_U32.pack(1), _U32.pack(STRING_TYPE), _U32.pack(len(k)), k,
                     _U32.pack(STRING_TYPE), _U32.pack(len(v)), v, project.encode("utf-8")))


def field(view: str, feature: str) -> bytes:
    """The hash field of one feature of one view."""
    return _U32.pack(mmh3.hash(f"{view}:{feature}", signed=False))


def ts_field(view: str) -> bytes:
    """The hash field holding the event time of a view's row."""
    return f"_ts:{view}".encode("utf-8")


def version_field(view: str) -> bytes:
    """Our own field beside Feast's: the version a writer compares before overwriting a row.

    Feast never reads it (it only asks for the fields of the features it wants), so it is
    invisible to `get_online_features`.
    """
    return f"_v:{view}".encode("utf-8")


def state_field(view: str) -> bytes:
    """Our own field beside Feast's: the session state machine's whole state after the row's
    event (`session_state.to_dict` as JSON), written with the row, so the scoring API can fold a
    request's triggering event onto it (`streaming_jobs.moment`). Feast never reads it."""
    return f"_state:{view}".encode("utf-8")


# -- protobuf wire format ---------------------------------------------------------------------
def _varint(n: int) -> bytes:
    if n < 0:
        n += 1 << 64  # int64 on the wire: two's complement in ten bytes
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _signed64(n: int) -> int:
    return n - (1 << 64) if n >= 1 << 63 else n


def encode_value(kind: str, value: Any) -> bytes:
    """A serialized feast Value: kind is "float" (Float64), "int" (Int64) or "string" (String).

    None and NaN encode as the empty message, which Feast reads back as null.
    """
    if value is None or (isinstance(value, float) and value != value):
        return b""
    if kind == "float":
        return _TAG_DOUBLE + _F64.pack(float(value))
    if kind == "int":
        return _TAG_INT64 + _varint(int(value))
    if kind == "string":
        raw = str(value).encode("utf-8")
        return _TAG_STRING + _varint(len(raw)) + raw
    raise ValueError(f"unknown value kind {kind!r}; expected float, int or string")


def decode_value(data: bytes | None) -> Any:
    """The Python value of a serialized feast Value (None for a missing or empty one)."""
    if not data:
        return None
    value: Any = None
    pos = 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            raw, pos = _read_varint(data, pos)
            if number == _BOOL:
                value = bool(raw)
            else:  # int32 (sign-extended on the wire), int64, unix_timestamp
                value = _signed64(raw)
        elif wire == 1:
            value = _F64.unpack_from(data, pos)[0]
            pos += 8
        elif wire == 5:
            value = _F32.unpack_from(data, pos)[0]
            pos += 4
        elif wire == 2:
            length, pos = _read_varint(data, pos)
            raw_bytes = data[pos:pos + length]
            pos += length
            if number == _STRING:
                value = raw_bytes.decode("utf-8")
            elif number == _BYTES:
                value = bytes(raw_bytes)
            else:
                raise ValueError(f"feast Value field {number} (a list) is not supported")
        else:
            raise ValueError(f"unsupported protobuf wire type {wire} in a feast Value")
    return value


def encode_timestamp(micros: int) -> bytes:
    """A serialized google.protobuf.Timestamp of an instant in microseconds since the epoch."""
    seconds, rest = divmod(int(micros), 1_000_000)
    out = b""
    if seconds:
        out += b"\x08" + _varint(seconds)
    if rest:
        out += b"\x10" + _varint(rest * 1000)
    return out


def decode_timestamp(data: bytes | None) -> int | None:
    """Microseconds since the epoch of a serialized Timestamp (None when absent)."""
    if not data:
        return None
    seconds = nanos = 0
    pos = 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        raw, pos = _read_varint(data, pos)
        if key >> 3 == 1:
            seconds = _signed64(raw)
        elif key >> 3 == 2:
            nanos = raw
    return seconds * 1_000_000 + nanos // 1000
