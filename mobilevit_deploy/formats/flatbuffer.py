"""What the flatbuffer formats (.tflite, .pte) share: a file's bytes, its 4-byte file identifier, and a
damaged file as one readable ArtifactError naming the path, never a struct or index error."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, TypeVar

from ..errors import ArtifactError

Facts = TypeVar("Facts")


def read_flatbuffer(path: Path, identifier: bytes, kind: str, parse: Callable[[bytes], Facts]) -> Facts:
    """`parse(data)` of the file at `path`, once its bytes 4..8 are `identifier`. `kind` ("a TFLite
    flatbuffer") says in errors what the file is not."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ArtifactError(f"cannot read {path}: {e.strerror or e}") from None
    if len(data) < 8 or data[4:8] != identifier:
        raise ArtifactError(f"{path} is not {kind} (no {identifier.decode()} identifier)")
    try:
        return parse(data)
    except ArtifactError as e:
        raise ArtifactError(f"{path}: {e}") from None
    except Exception as e:       # truncated or corrupt: struct and index errors from the flatbuffer walk
        raise ArtifactError(f"{path} is damaged or not {kind} ({type(e).__name__}: {e})") from None
