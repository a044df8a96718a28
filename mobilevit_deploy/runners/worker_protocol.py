"""The protocol between a WorkerRunner (worker.py) and its worker process, for every worker engine
(LiteRT, ExecuTorch), and the worker's side of it: `serve(handlers, worker)`.

A message is a JSON header frame followed by `header["arrays"]` .npy frames; each frame is its
length (8 bytes, little-endian) and its bytes. Requests carry `"op"`; replies carry `"ok"` and,
when not ok, `"error"`. Reads can time out, so a hung engine is an error, not a hang.

The worker side imports numpy and the standard library only (engines are imported by the handlers
that need them), so the same worker script runs under any Python that has numpy, an emulated one too.
"""
from __future__ import annotations

import io
import json
import os
import platform
import select
import struct
import sys
from typing import BinaryIO, Callable, Sequence

import numpy as np

FRAME = struct.Struct("<Q")

Reply = tuple[dict, list[np.ndarray]]


class Worker:
    """What a worker's handlers share: its engine object (an interpreter, a method), once loaded."""

    def __init__(self, what: str):
        self.what = what                 # "model", "program": in "no model is loaded"
        self.engine = None

    def loaded(self):
        if self.engine is None:
            raise ValueError(f"no {self.what} is loaded (send a load request first)")
        return self.engine


Handler = Callable[[Worker, dict, list[np.ndarray]], Reply]


def serve(handlers: dict[str, Handler], worker: Worker) -> None:
    """Read a request, answer it with `handlers[request["op"]]`, until "quit" or end of input.

    The protocol is on the original stdin/stdout; fd 1 is moved to stderr first, so anything native
    code prints can never corrupt it. A handler's exception goes back as an error reply (the runner
    raises ArtifactError), so only a native crash ends the worker early."""
    protocol_out = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)                    # native prints go to stderr, never into the protocol
    sys.stdout = sys.stderr
    protocol_in = sys.stdin.buffer
    while True:
        try:
            header, arrays = read_message(protocol_in)
        except EOFError:
            return
        op = header["op"]
        if op == "quit":
            return
        if op == "machine":           # every worker says what it runs on (an emulated aarch64 one too)
            write_message(protocol_out, {"ok": True, "machine": platform.machine(), "features": _cpu_features()})
            continue
        try:
            handler = handlers.get(op)
            if handler is None:
                raise ValueError(f"unknown request {op!r}")
            reply, out = handler(worker, header, arrays)
        except Exception as e:       # reported to the parent as an ArtifactError with this message
            message = str(e).strip().splitlines()
            write_message(protocol_out, {"ok": False, "error": f"{type(e).__name__}: "
                                                              + (message[0] if message else "")})
            continue
        write_message(protocol_out, {**reply, "ok": True}, out)


def _cpu_features() -> list[str]:
    """The CPU features this process sees (/proc/cpuinfo: x86 "flags", ARM "Features"; under qemu, the
    emulated CPU's)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip().lower() in ("flags", "features"):
                    return value.split()
    except OSError:
        pass
    return []


def write_message(stream: BinaryIO, header: dict, arrays: Sequence[np.ndarray] = ()) -> None:
    """Send a header and its arrays; the header's "arrays" says how many follow."""
    header = {**header, "arrays": len(arrays)}
    _write_frames(stream, [json.dumps(header).encode(), *(npy_bytes(a) for a in arrays)])


def read_message(stream: BinaryIO, timeout_s: float | None = None) -> tuple[dict, list[np.ndarray]]:
    """Receive a header and its arrays. TimeoutError when a frame does not start arriving within
    `timeout_s`; EOFError when the other side is gone; ValueError on a malformed frame."""
    header = json.loads(_read_frame(stream, timeout_s))
    arrays = [np.load(io.BytesIO(_read_frame(stream, timeout_s)), allow_pickle=False)
              for _ in range(header.get("arrays", 0))]
    return header, arrays


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def _write_frames(stream: BinaryIO, frames: list[bytes]) -> None:
    for frame in frames:
        stream.write(FRAME.pack(len(frame)))
        stream.write(frame)
    stream.flush()


def _read_frame(stream: BinaryIO, timeout_s: float | None) -> bytes:
    (length,) = FRAME.unpack(_read_exact(stream, FRAME.size, timeout_s))
    return _read_exact(stream, length, timeout_s)


def _read_exact(stream: BinaryIO, n: int, timeout_s: float | None) -> bytes:
    chunks, remaining, fd = [], n, stream.fileno()
    while remaining:
        if timeout_s is not None:
            ready, _, _ = select.select([fd], [], [], timeout_s)
            if not ready:
                raise TimeoutError
        chunk = os.read(fd, min(remaining, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)
