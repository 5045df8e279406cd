"""What a direct lane carries, as msgpack: the types that cross it and nothing else (never pickle).

A pickle from the wire runs whatever code its bytes name; msgpack only ever makes maps, lists,
strings and numbers, and each type that crosses is rebuilt here, field by field, from those:

- a call (driver -> worker): `[name, [value, ...]]`;
- a reply (worker -> driver): `[kind, value]`, kind `ok` (the result), `failed` (the error's first
  line) or `event` (what a streaming call told before its reply);
- a value: a plain value (None, a bool, an int, a float, a str, or a tuple of plain values: the
  warm-up's pass name and batch count, an event, the error line), or one of the contract's types
  as a msgpack extension whose body is its fields by name: `SampleBatch` (1) and `ShardResult` (2,
  with its `WorkerError` and `DeviceHealth` inside, its records: lists of JSON-like maps, LoadGen's
  response bytes, and a generate batch's `RequestRecord`s and `DecodeTotals`).

Encoding refuses anything else with `LaneEncodingError`, naming the type (and the field). Decoding
checks every field's type and refuses a message the lane never sends with `LaneDecodingError`: the
message was authenticated (workers/lane_wire.py), so that is a bug or a different raybench at the
other end, and the lane ends. Each schema below names every field of its dataclass, which this
module checks when it is imported: a field added to the contract without its line here fails at once.
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any, Callable

import msgpack
import numpy as np

from workers.contract import DecodeTotals, DeviceHealth, SampleBatch, ShardResult, WorkerError
from workers.requests import RequestError, RequestRecord

OK, FAILED, EVENT = "ok", "failed", "event"  # (OK, result) or (FAILED, the first line) ends a call; (EVENT, x) before
_SAMPLE_BATCH, _SHARD_RESULT = 1, 2  # msgpack extension codes


class LaneEncodingError(TypeError):
    """A value the lane does not carry (nothing was sent)."""


class LaneDecodingError(ValueError):
    """An authenticated message that is not one the lane sends: the lane ends."""


class _Refused(Exception):
    """A field that does not fit its schema, while encoding or decoding."""


# ---- plain values: each converter checks (and, encoding, normalises numpy scalars) both ways; the
# exact Python types go first, a check per value on every batch both ways (benchmarks/lane_wire.py) ----

_SCALARS = frozenset({type(None), bool, int, float, str})


def _int(value: Any) -> int:
    if type(value) is int:
        return value
    if isinstance(value, np.generic):
        value = value.item()  # a worker's figures are often numpy
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Refused(f"an int, not {type(value).__name__}")
    return int(value)


def _float(value: Any) -> float:
    if type(value) is float:
        return value
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise _Refused(f"a number, not {type(value).__name__}")
    return float(value)


def _str(value: Any) -> str:
    if type(value) is not str and not isinstance(value, str):
        raise _Refused(f"a str, not {type(value).__name__}")
    return value


def _bytes(value: Any) -> bytes:
    if type(value) is not bytes:
        raise _Refused(f"bytes, not {type(value).__name__}")
    return value


def _optional(convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda value: None if value is None else convert(value)


def _list_of(convert: Callable[[Any], Any], exact: type | None = None) -> Callable[[Any], list]:
    """A list of `convert`ed items; where every item is already of the `exact` type, as it is."""
    def converted(value: Any) -> list:
        if type(value) is not list and not isinstance(value, (list, tuple)):
            raise _Refused(f"a list, not {type(value).__name__}")
        if exact is not None and all(type(v) is exact for v in value):
            return value if type(value) is list else list(value)
        return [convert(v) for v in value]
    return converted


def _tuple_of(convert: Callable[[Any], Any], exact: type | None = None) -> Callable[[Any], tuple]:
    as_list = _list_of(convert, exact)
    return lambda value: tuple(as_list(value))


_ints, _floats = _list_of(_int, int), _list_of(_float, float)
_opt_int, _opt_float = _optional(_int), _optional(_float)
_EXACT = {_int: frozenset({int}), _float: frozenset({float}), _str: frozenset({str}),  # what each passes as it is
          _opt_int: frozenset({int, type(None)}), _opt_float: frozenset({float, type(None)})}


def _energy(value: Any) -> dict[str, list[float]]:
    if not isinstance(value, dict):
        raise _Refused(f"a map, not {type(value).__name__}")
    return {_str(k): _floats(v) for k, v in value.items()}


def _json(value: Any) -> Any:
    """A record's value: what JSON holds (records are written as JSON lines)."""
    if type(value) in _SCALARS:
        return value
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_json(v) for v in value]
    if isinstance(value, dict):
        return _record(value)
    raise _Refused(f"a JSON value, not {type(value).__name__}")


def _record(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Refused(f"a record (a map), not {type(value).__name__}")
    if all(type(k) is str and type(v) in _SCALARS for k, v in value.items()):
        return value  # the usual record: flat, of plain values
    return {_str(k): _json(v) for k, v in value.items()}


def plain(value: Any) -> Any:
    """A plain value (module docstring); a list arrives as a tuple."""
    if type(value) in _SCALARS:
        return value
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return tuple(plain(v) for v in value)
    raise _Refused(f"{type(value).__module__}.{type(value).__qualname__} (the lane carries plain values, "
                   "tuples of them, SampleBatch and ShardResult)")


# ---- the contract's types, field by field ----

class _Schema:
    """One dataclass: each field's converter; to the wire as a map of its fields, and back."""

    def __init__(self, cls: type, fields: dict[str, Callable[[Any], Any]]) -> None:
        names = [f.name for f in dataclasses.fields(cls)]
        if set(names) != set(fields):
            raise RuntimeError(f"workers/lane_codec.py: {cls.__name__}'s schema differs from its fields: missing "
                               f"{sorted(set(names) - set(fields))}, unknown {sorted(set(fields) - set(names))}")
        self.cls, self.fields = cls, fields
        self._simple = [(name, _EXACT[convert]) for name, convert in fields.items() if convert in _EXACT]
        self._compound = [(name, convert) for name, convert in fields.items() if convert not in _EXACT]

    def to_wire(self, obj: Any) -> dict[str, Any]:
        return self._converted(vars(obj))  # a dataclass's fields are its attributes (no slots here)

    def from_wire(self, body: Any) -> Any:
        if not isinstance(body, dict) or body.keys() != self.fields.keys():
            raise _Refused(f"{self.cls.__name__}'s fields, not {sorted(body) if isinstance(body, dict) else body!r}")
        return self.cls(**self._converted(body))

    def _converted(self, values: dict[str, Any]) -> dict[str, Any]:
        """Each field converted; the scalar fields whose type is already exact (the usual case) as they are."""
        if all(type(values[name]) in exact for name, exact in self._simple):
            out, convert_all = {name: values[name] for name, _ in self._simple}, self._compound
        else:
            out, convert_all = {}, self.fields.items()
        name = ""
        try:
            for name, convert in convert_all:
                out[name] = convert(values[name])
        except _Refused as exc:
            raise _Refused(f"{self.cls.__name__}.{name}: {exc}") from None
        return out


_WORKER_ERROR = _Schema(WorkerError, {"kind": _str, "message": _str, "detail": _str})
_DEVICE_HEALTH = _Schema(DeviceHealth, {
    "samples": _int, "sm_clock_mhz_min": _opt_int, "clock_events": _list_of(_str),
    "temperature_c_max": _opt_int, "power_w_max": _opt_float, "xid_errors": _ints,
    "ecc_errors": _opt_int, "other_pids": _optional(_ints), "note": _str,
})
_BATCH = _Schema(SampleBatch, {"batch_id": _int, "indices": _tuple_of(_int, int), "pass_name": _str,
                                             "attempt": _int})
_RESULT_FIELDS = {  # health and error: below, the nested types
    "shard_id": _int, "pass_name": _str, "attempt": _int, "worker_id": _int, "node_id": _str, "device_name": _str,
    "pid": _int, "examples": _int, "items": _int, "scored": _int, "correct": _int, "flops": _float,
    "core_seconds": _float, "h2d_seconds": _float, "wall_seconds": _float, "start_ts": _float, "end_ts": _float,
    "warmup_batches": _int, "warmup_seconds": _float, "batch_core_seconds": _floats, "batch_items": _ints,
    "batch_rows": _ints, "batch_seq_lens": _ints, "batch_tokens": _ints, "bytes_per_batch": _int,
    "peak_mem_bytes": _opt_int, "mem_total_bytes": _opt_int, "mem_source": _str,
    "energy_joules": _opt_float, "energy_note": _str, "energy_counters": _energy,
    "records": _list_of(_record), "repeat": _int, "start": _int, "stop": _int,
    "responses": _list_of(_bytes, bytes),  # LoadGen's response bytes of each sample (the task's encoding)
}


def _nested(schema: _Schema, encoding: bool) -> Callable[[Any], Any]:
    def convert(value: Any) -> Any:
        if value is None:
            return None
        if encoding and not isinstance(value, schema.cls):
            raise _Refused(f"a {schema.cls.__name__}, not {type(value).__name__}")
        return schema.to_wire(value) if encoding else schema.from_wire(value)
    return convert


_DECODE = _Schema(DecodeTotals, {"input_tokens": _int, "prefill_seconds": _opt_float, "prefill_flops": _float,
                                 "decode_seconds": _opt_float, "decode_flops": _float, "decode_bytes": _opt_float})
_REQUEST_ERROR = _Schema(RequestError, {"kind": _str, "message": _str})
_REQUEST_FIELDS = {"request_id": _int, "arrival_s": _float, "sent_s": _opt_float, "first_byte_s": _opt_float,
                   "token_times_s": _floats, "token_counts": _ints, "end_s": _opt_float, "input_tokens": _int,
                   "output_tokens": _int, "source": _str}
_REQUEST_OUT = _Schema(RequestRecord, {**_REQUEST_FIELDS, "error": _nested(_REQUEST_ERROR, True)})
_REQUEST_IN = _Schema(RequestRecord, {**_REQUEST_FIELDS, "error": _nested(_REQUEST_ERROR, False)})
_GENERATE_OUT = {"requests": _list_of(_nested(_REQUEST_OUT, True)), "decode": _nested(_DECODE, True)}
_GENERATE_IN = {"requests": _list_of(_nested(_REQUEST_IN, False)), "decode": _nested(_DECODE, False)}
_RESULT_OUT = _Schema(ShardResult, {**_RESULT_FIELDS, **_GENERATE_OUT, "health": _nested(_DEVICE_HEALTH, True),
                                    "error": _nested(_WORKER_ERROR, True)})
_RESULT_IN = _Schema(ShardResult, {**_RESULT_FIELDS, **_GENERATE_IN, "health": _nested(_DEVICE_HEALTH, False),
                                   "error": _nested(_WORKER_ERROR, False)})


# ---- values and messages ----

def _value_out(value: Any) -> Any:
    if isinstance(value, SampleBatch):
        return msgpack.ExtType(_SAMPLE_BATCH, _pack(_BATCH.to_wire(value)))
    if isinstance(value, ShardResult):
        return msgpack.ExtType(_SHARD_RESULT, _pack(_RESULT_OUT.to_wire(value)))
    return plain(value)


def _value_in(value: Any) -> Any:
    if isinstance(value, (SampleBatch, ShardResult)):
        return value  # rebuilt by _ext below, fields checked
    return plain(value)


def _ext(code: int, body: bytes) -> Any:
    schema = {_SAMPLE_BATCH: _BATCH, _SHARD_RESULT: _RESULT_IN}.get(code)
    if schema is None:
        raise _Refused(f"no type has extension code {code}")
    return schema.from_wire(msgpack.unpackb(body, raw=False, strict_map_key=True))


def _pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def _unpack(data: bytes, what: str) -> list:
    try:
        message = msgpack.unpackb(data, raw=False, strict_map_key=True, ext_hook=_ext)
    except (_Refused, ValueError, TypeError, msgpack.UnpackException, RecursionError) as exc:
        raise LaneDecodingError(f"not a lane {what}: {exc}") from None
    if not isinstance(message, list) or len(message) != 2:
        raise LaneDecodingError(f"not a lane {what}: {type(message).__name__}")
    return message


def encode_call(name: str, args: tuple) -> bytes:
    try:
        return _pack([_str(name), [_value_out(a) for a in args]])
    except (_Refused, TypeError, ValueError, OverflowError) as exc:
        raise LaneEncodingError(f"the lane cannot carry the arguments of {name!r}: {exc}") from None


def decode_call(data: bytes) -> tuple[str, tuple]:
    name, args = _unpack(data, "call")
    try:
        return _str(name), tuple(_value_in(a) for a in _list_of(lambda v: v)(args))
    except _Refused as exc:
        raise LaneDecodingError(f"not a lane call: {exc}") from None


def encode_reply(kind: str, value: Any) -> bytes:
    try:
        return _pack([kind, _value_out(value)])
    except (_Refused, TypeError, ValueError, OverflowError) as exc:
        raise LaneEncodingError(f"the lane cannot carry this {'event' if kind == EVENT else 'result'}: {exc}") from None


def decode_reply(data: bytes) -> tuple[str, Any]:
    kind, value = _unpack(data, "reply")
    if kind not in (OK, FAILED, EVENT):
        raise LaneDecodingError(f"not a lane reply: kind {kind!r}")
    try:
        return kind, _value_in(value)
    except _Refused as exc:
        raise LaneDecodingError(f"not a lane reply: {exc}") from None
