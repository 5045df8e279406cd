"""What a lane carries (workers/lane_codec.py): the contract's types field by field, plain values,
and a refusal, naming what, for anything else; nothing from the wire is ever unpickled."""

import pickle

import msgpack
import numpy as np
import pytest

from workers.contract import DecodeTotals
from workers.requests import RequestError, RequestRecord

from workers.contract import DeviceHealth, SampleBatch, ShardResult, WorkerError
from workers.lane_codec import (
    EVENT,
    FAILED,
    OK,
    LaneDecodingError,
    LaneEncodingError,
    decode_call,
    decode_reply,
    encode_call,
    encode_reply,
)


def full_result(**numbers) -> ShardResult:
    """Every field away from its default, the nested types included."""
    return ShardResult(
        shard_id=7, pass_name="infer", attempt=2, worker_id=3, node_id="n1", device_name="cpu", pid=4242,
        examples=numbers.get("examples", 4), items=64, scored=4, correct=3, flops=1.5e9, core_seconds=0.02,
        h2d_seconds=0.001, wall_seconds=0.025, start_ts=1.0, end_ts=1.025, warmup_batches=1,
        batch_core_seconds=[0.02], batch_items=[64], batch_rows=[4], batch_seq_lens=[16], bytes_per_batch=512,
        peak_mem_bytes=1 << 30, mem_total_bytes=None, mem_source="torch.cuda", energy_joules=12.5, energy_note="",
        energy_counters={"n1/GPU-1": [100.0, 112.5]},
        health=DeviceHealth(samples=3, sm_clock_mhz_min=1410, clock_events=["sw_power_cap"], temperature_c_max=71,
                            power_w_max=301.5, xid_errors=[79], ecc_errors=0, other_pids=None, note="no fan"),
        records=[{"example": numbers.get("example", 5), "predicted": "B", "correct": True, "logit_A": -1.25,
                  "nested": {"ids": [1, 2], "none": None}}],
        error=WorkerError("crash", "CUDA error: an illegal memory access", detail="log"), repeat=1, start=10, stop=14,
        responses=[b"\x01\x00\x00\x00", b"", b"\xff" * 9],
        requests=[RequestRecord(3, 1.0, 1.01, None, [1.02, 1.03], [1, 1], 1.03, 12, 2, None, "worker 3"),
                  RequestRecord(4, 1.0, error=RequestError("engine", "CUDA out of memory"), source="worker 3")],
        decode=DecodeTotals(24, None, 1e9, None, 2e9, 3.5e8),
    )


def test_a_full_shard_result_and_a_batch_cross_intact():
    kind, result = decode_reply(encode_reply(OK, full_result()))
    assert kind == OK and result == full_result()
    assert isinstance(result.health, DeviceHealth) and isinstance(result.error, WorkerError)
    batch = SampleBatch(batch_id=9, indices=(4, 1, 3), pass_name="infer", attempt=2)
    assert decode_call(encode_call("run_samples", (batch,))) == ("run_samples", (batch,))


def test_numpy_scalars_cross_as_python_numbers():
    """A worker's figures and records are often numpy: they arrive as the Python numbers they are."""
    sent = full_result(examples=np.int64(4), example=np.int32(5))
    sent.records[0]["logit_A"] = np.float32(-1.25)
    sent.core_seconds = np.float64(0.02)
    _, result = decode_reply(encode_reply(OK, sent))
    assert result == full_result() and type(result.examples) is int and type(result.records[0]["example"]) is int


def test_plain_values_events_and_the_error_line_cross():
    assert decode_call(encode_call("warm_up", ("infer",))) == ("warm_up", ("infer",))
    assert decode_reply(encode_reply(OK, 3)) == (OK, 3)
    assert decode_reply(encode_reply(EVENT, ("token", 0, 1.5, None, True))) == (EVENT, ("token", 0, 1.5, None, True))
    assert decode_reply(encode_reply(FAILED, "ValueError: bad batch")) == (FAILED, "ValueError: bad batch")


@pytest.mark.parametrize("value, named", [
    (object(), "builtins.object"), ({"a": 1}, "builtins.dict"), (b"raw", "builtins.bytes"), ({1, 2}, "builtins.set"),
    (("ok", object()), "builtins.object"), (WorkerError("user", "x"), "WorkerError"),
])
def test_anything_else_is_refused_naming_its_type(value, named):
    with pytest.raises(LaneEncodingError, match=f"cannot carry the arguments of 'run_samples': .*{named}"):
        encode_call("run_samples", (value,))
    with pytest.raises(LaneEncodingError, match=named):
        encode_reply(OK, value)


def test_a_field_of_the_wrong_type_is_refused_naming_the_field():
    bad = full_result()
    bad.records = [{"example": 1, "tensor": object()}]
    with pytest.raises(LaneEncodingError, match=r"ShardResult\.records: a JSON value, not object"):
        encode_reply(OK, bad)
    bad = full_result()
    bad.items = 1.5
    with pytest.raises(LaneEncodingError, match=r"ShardResult\.items: an int, not float"):
        encode_reply(OK, bad)


def forged(code: int, body: dict) -> bytes:
    """A reply as a (buggy or foreign) peer could send it: msgpack built by hand."""
    return msgpack.packb([OK, msgpack.ExtType(code, msgpack.packb(body, use_bin_type=True))], use_bin_type=True)


def test_a_message_the_lane_never_sends_is_refused_field_by_field():
    fields = msgpack.unpackb(encode_reply(OK, full_result()), raw=False, ext_hook=lambda c, b: msgpack.unpackb(b))[1]
    with pytest.raises(LaneDecodingError, match=r"ShardResult\.items: an int, not str"):
        decode_reply(forged(2, {**fields, "items": "64"}))
    with pytest.raises(LaneDecodingError, match="ShardResult's fields"):
        decode_reply(forged(2, {**fields, "__reduce__": "os.system"}))
    with pytest.raises(LaneDecodingError, match=r"ShardResult\.error: WorkerError's fields"):
        decode_reply(forged(2, {**fields, "error": {"kind": "crash"}}))
    with pytest.raises(LaneDecodingError, match="no type has extension code 9"):
        decode_reply(forged(9, {}))
    with pytest.raises(LaneDecodingError, match="kind 'exec'"):
        decode_reply(msgpack.packb(["exec", "x"]))
    with pytest.raises(LaneDecodingError, match="not a lane call"):
        decode_call(msgpack.packb({"name": "run_samples"}))


def test_a_pickle_on_the_wire_is_never_unpickled(monkeypatch):
    """Bytes a pickle would run code from are refused as not msgpack of a lane message; no
    unpickler is ever asked (each is made to fail here)."""

    def unpickled(*args, **kwargs):
        raise AssertionError("the lane unpickled something")

    for name in ("loads", "load", "Unpickler"):
        monkeypatch.setattr(pickle, name, unpickled)
    payload = pickle.dumps(("ok", full_result()))
    with pytest.raises(LaneDecodingError):
        decode_reply(payload)
    with pytest.raises(LaneDecodingError):
        decode_call(payload)


def test_response_bytes_must_be_bytes():
    result = full_result()
    result.responses = ["not bytes"]
    with pytest.raises(LaneEncodingError, match="responses"):
        encode_reply(OK, result)
