"""The wire protocol between the LiteRT runner and its worker process.

A message is a JSON header frame followed by `header["arrays"]` .npy frames; each frame is its
length (8 bytes, little-endian) and its bytes. Requests carry `"op"`; replies carry `"ok"` and,
when not ok, `"error"`. Reads can time out, so a hung interpreter is an error, not a hang.
"""
from __future__ import annotations

import io
import json
import os
import select
import struct
from typing import BinaryIO, Sequence

import numpy as np

FRAME = struct.Struct("<Q")


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
