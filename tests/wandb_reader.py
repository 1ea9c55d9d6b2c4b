"""A reader for W&B's offline run files (run-*.wandb), for tests: the records that `wandb sync`
would upload. The format is W&B's LevelDB-style log: a 7-byte header (":W&B", magic 0xBEE1, a
version byte), then 32 KiB blocks of records, each with a 4-byte checksum, a 2-byte length, a
1-byte type (full, first, middle, last) and a protobuf `Record` payload."""

from __future__ import annotations

import json
import struct
from pathlib import Path

BLOCK = 32768


def records(path: Path) -> list:
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    pos, out, pending = 7, [], b""
    while pos + 7 <= len(data):
        room = BLOCK - pos % BLOCK
        if room < 7:  # block trailer padding
            pos += room
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if length == 0 and kind == 0:
            pos += room
            continue
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            rec = pb.Record()
            rec.ParseFromString(pending)
            out.append(rec)
            pending = b""
    return out


def summarize(path: Path) -> dict:
    """The run's group, job type, config, summary and history rows, as plain Python values."""
    run, config, summary, history = {}, {}, {}, []
    for rec in records(path):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            run = {"group": rec.run.run_group, "job_type": rec.run.job_type, "id": rec.run.run_id}
            config.update({i.key: json.loads(i.value_json) for i in rec.run.config.update})
        elif kind == "config":
            config.update({i.key: json.loads(i.value_json) for i in rec.config.update})
        elif kind == "summary":
            summary.update(
                {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.summary.update}
            )
        elif kind == "history":
            history.append(
                {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.history.item}
            )
    return {**run, "config": config, "summary": summary, "history": history}
