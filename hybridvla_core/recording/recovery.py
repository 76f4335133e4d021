"""Crash recovery of an episode bag: `recover_episode` turns a bag that does not open (left marked incomplete by a
crashed recorder, cut short by a kill or an interrupted copy) into a proper bag from its completed MCAP chunks
(all but at most the last ~1 MiB of stored data): zstd compressed chunks (chunk-zstd, the default),
message-mode zstd compressed messages and uncompressed ones, written with the crashed bag's own compression.
`read_truncated_mcap` reads such a file record by record (an MCAP reader needs the footer it lacks)."""
from __future__ import annotations

import itertools
import struct
from pathlib import Path
from typing import Iterator

from hybridvla_core.recording import bags
from hybridvla_core.recording.recorder import EPISODE_EVENT, INCOMPLETE_MARKER


def _mcap_records(data: bytes, start: int = 0) -> Iterator[tuple[int, bytes]]:
    """(opcode, body) of every complete MCAP record from `start`; stops silently at a truncated one."""
    pos = start
    while pos + 9 <= len(data):
        op, length = data[pos], struct.unpack_from("<Q", data, pos + 1)[0]
        if pos + 9 + length > len(data):
            return
        yield op, data[pos + 9:pos + 9 + length]
        pos += 9 + length


def _mcap_string(body: bytes, pos: int) -> tuple[str, int]:
    (n,) = struct.unpack_from("<I", body, pos)
    return body[pos + 4:pos + 4 + n].decode(), pos + 4 + n


def read_truncated_mcap(path: str | Path, *, stored: bool = False) -> Iterator[tuple[str, str, int, bytes]]:
    """(topic, msgtype, log time ns, CDR bytes) of every message in the complete chunks of an MCAP file
    whose writer never finished (no footer, no summary), in file order. zstd compressed chunks are
    decompressed; message-mode compressed messages (one zstd frame each) come back as CDR, and stored=True
    gives the message bytes as stored in the chunk instead (still a zstd frame each in a message-mode bag)."""
    data = Path(path).read_bytes()
    if not data.startswith(b"\x89MCAP0\r\n"):
        raise ValueError(f"{path}: not an MCAP file")
    schemas: dict[int, str] = {}
    channels: dict[int, tuple[str, str]] = {}

    def walk(records):
        for op, body in records:
            if op == 0x03:  # schema: id, name, encoding, data
                (sid,) = struct.unpack_from("<H", body, 0)
                schemas[sid], _ = _mcap_string(body, 2)
            elif op == 0x04:  # channel: id, schema id, topic, ...
                cid, sid = struct.unpack_from("<HH", body, 0)
                topic, _ = _mcap_string(body, 4)
                channels[cid] = (topic, schemas.get(sid, ""))
            elif op == 0x05:  # message: channel, sequence, log time, publish time, data
                cid, _, log_time = struct.unpack_from("<HIQ", body, 0)
                if cid in channels:
                    yield (*channels[cid], log_time, body[22:] if stored else bags.stored_to_cdr(body[22:]))
            elif op == 0x06:  # chunk: start, end, uncompressed size, crc, compression, records
                uncompressed_size = struct.unpack_from("<Q", body, 16)[0]
                compression, pos = _mcap_string(body, 28)
                (size,) = struct.unpack_from("<Q", body, pos)
                records = body[pos + 8:pos + 8 + size]
                if compression == "zstd":
                    records = bags.zstd_module().decompress(records)
                elif compression:
                    raise ValueError(f"{path}: unsupported chunk compression {compression!r}")
                if len(records) == uncompressed_size:
                    yield from walk(_mcap_records(records))

    yield from walk(_mcap_records(data, 8))


def recover_episode(path: str | Path, compression: str | None = None) -> tuple[Path, int | None]:
    """Turn a bag that does not open (left marked incomplete by a crashed recorder, cut short by a kill or an
    interrupted copy, or without its metadata.yaml) into a proper bag: the original moves to <path>.crashed (kept,
    nothing is deleted; its marker removed, and find_bags leaves it out) and its intact messages are written to
    <path> with metadata outcome "incomplete". compression: that of the new bag (bags.COMPRESSIONS); None = the
    crashed bag's own: message-zstd when its first message is a zstd frame, else chunk-zstd when its chunks
    are compressed, else none. Returns (new bag path, messages recovered);
    a bag recovered before comes back as (path, None): recovering twice changes nothing."""
    path = Path(path)
    problem = bags.bag_problem(path)
    if problem is None:
        if "recovered_from" in bags.bag_metadata(path):
            return path, None
        raise ValueError(f"{path}: nothing to recover (it opens, and its recording was closed)")
    if path.name.endswith(bags.CRASHED_SUFFIX) or not path.is_dir():
        raise ValueError(problem)
    mcaps = sorted(path.glob("*.mcap"))
    if not mcaps:
        raise ValueError(f"{path}: no .mcap file to recover")
    crashed = path.with_name(path.name + bags.CRASHED_SUFFIX)
    if crashed.exists():
        raise ValueError(f"{crashed} already exists (an earlier recovery of {path.name} that did not finish?): "
                         f"move it away, then recover {path} again")
    if compression is not None:
        compression = bags.check_compression(compression)
    messages = read_truncated_mcap(mcaps[0], stored=True)
    first = next(messages, None)  # reads the whole file: a bad one is refused before anything moves
    path.rename(crashed)
    if compression is None:
        compression = ("message-zstd" if first is not None and bags.is_zstd_frame(first[3])
                       else "chunk-zstd" if first is not None and bags.mcap_chunk_compression(crashed / mcaps[0].name)
                       else "none" if first is not None else bags.DEFAULT_COMPRESSION)
    messages = itertools.chain([first] if first is not None else [], messages)
    count, instruction = 0, None
    with bags.EpisodeWriter(path, metadata={"outcome": "incomplete", "success": "false",
                                            "stop_reason": "recovered after a crash",
                                            "recovered_from": crashed.name}, compression=compression) as writer:
        for topic, msgtype, t_ns, stored in messages:
            data = bags.stored_to_cdr(stored)
            if msgtype == EPISODE_EVENT and instruction is None:  # the START event names the episode
                event = bags.typestore().deserialize_cdr(data, msgtype)
                instruction = event.instruction
                writer.set_metadata("instruction", instruction)
                writer.set_metadata("episode_index", event.episode_index)
            writer.write_cdr(topic, msgtype, t_ns, data)
            count += 1
    (crashed / INCOMPLETE_MARKER).unlink(missing_ok=True)  # recovered: nothing asks for it again
    return path, count
