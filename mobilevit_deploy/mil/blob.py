"""Read the weight blob of an ML Program (`weights/weight.bin`) without Apple's native reader.

The format is MILBlob storage v2 (coremltools `mlmodel/src/MILBlob/Blob/StorageFormat.hpp`):

    file header, 64 bytes:   uint32 count, uint32 version (2), 56 reserved bytes
    per blob, 64-byte aligned metadata (the offset a const's `blobFileValue` points at):
        uint32 sentinel 0xDEADBEEF, uint32 dtype code, uint64 size_in_bytes,
        uint64 data_offset, uint64 padding_size_in_bits (sub-byte types), 32 reserved bytes
    then the data itself at `data_offset`, little endian, sub-byte values packed from the
    least significant bit upward.

Parsing it here (rather than through `coremltools.libmilstoragepython`) keeps the reference
interpreter independent of the toolchain that wrote the file, and lets it say exactly what is
wrong with a damaged blob.
"""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from ..errors import ArtifactError

SENTINEL = 0xDEADBEEF
HEADER = struct.Struct("<II")               # count, version
METADATA = struct.Struct("<IIQQQ")          # sentinel, dtype, size, data offset, padding bits

# blob dtype code -> (numpy storage dtype, bits per element, signed)
BLOB_DTYPES: dict[int, tuple[type, int, bool]] = {
    1: (np.float16, 16, True),
    2: (np.float32, 32, True),
    3: (np.uint8, 8, False),
    4: (np.int8, 8, True),
    6: (np.int16, 16, True),
    7: (np.uint16, 16, False),
    8: (np.int8, 4, True),       # int4
    9: (np.uint8, 1, False),     # uint1
    10: (np.uint8, 2, False),    # uint2
    11: (np.uint8, 4, False),    # uint4
    12: (np.uint8, 3, False),    # uint3
    13: (np.uint8, 6, False),    # uint6
    14: (np.int32, 32, True),
    15: (np.uint32, 32, False),
}


def unpack_bits(packed: np.ndarray, nbits: int, count: int, signed: bool) -> np.ndarray:
    """`count` n-bit values packed LSB first into bytes -> int8 (signed) or uint8 values."""
    bits = np.unpackbits(np.asarray(packed, dtype=np.uint8).view(np.uint8), bitorder="little")
    bits = bits[: count * nbits].reshape(count, nbits).astype(np.int16)
    values = (bits << np.arange(nbits, dtype=np.int16)).sum(axis=1)
    if signed:
        values = np.where(values >= 1 << (nbits - 1), values - (1 << nbits), values)
        return values.astype(np.int8)
    return values.astype(np.uint8)


class BlobFile:
    """One weight.bin, memory-mapped; `read(offset)` returns the flat values of one blob."""

    def __init__(self, path: Path):
        self.path = Path(path)
        try:
            self.data = np.memmap(self.path, dtype=np.uint8, mode="r")
        except (OSError, ValueError) as e:
            raise ArtifactError(f"cannot read weight blob {self.path}: {e}") from None
        if len(self.data) < 64:
            raise ArtifactError(f"weight blob {self.path} is {len(self.data)} bytes, shorter than its 64-byte header")
        count, version = HEADER.unpack_from(self.data, 0)
        if version != 2:
            raise ArtifactError(f"weight blob {self.path} has storage version {version}; only version 2 is known")
        self.count = count

    def read(self, offset: int) -> np.ndarray:
        if offset + METADATA.size > len(self.data):
            raise ArtifactError(f"weight blob {self.path.name}: offset {offset} is past the end of the file "
                                f"({len(self.data)} bytes; truncated?)")
        sentinel, code, size, data_offset, padding_bits = METADATA.unpack_from(self.data, offset)
        if sentinel != SENTINEL:
            raise ArtifactError(
                f"weight blob {self.path.name}: no blob metadata at offset {offset} "
                f"(sentinel {sentinel:#x}, expected {SENTINEL:#x}); the file is damaged or not this model's"
            )
        if code not in BLOB_DTYPES:
            raise ArtifactError(f"weight blob {self.path.name}: unknown data type code {code} at offset {offset}")
        if data_offset + size > len(self.data):
            raise ArtifactError(
                f"weight blob {self.path.name}: blob at offset {offset} needs bytes up to "
                f"{data_offset + size}, the file has {len(self.data)} (truncated?)"
            )
        dtype, nbits, signed = BLOB_DTYPES[code]
        raw = np.asarray(self.data[data_offset:data_offset + size])
        if nbits >= 8:
            return raw.view(dtype).copy()
        return unpack_bits(raw, nbits, (size * 8 - padding_bits) // nbits, signed)
