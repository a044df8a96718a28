"""A copy of a .pte whose XNNPACK delegates hand out their intermediate values as extra `forward` outputs.

The XNNPACK delegate runs each partition of the graph as one opaque call: ExecuTorch's event tracer sees
its inputs and outputs only. `debug` and the report's per-layer table need the values inside, so
`expose_intermediates(src, dst)` writes a copy in which every activation a node inside an XNNPACK payload
produces (not a weight, not already the delegate's input or output, of a datatype ExecuTorch can hold)
is an external output of its XNNPACK graph, an extra argument of its DelegateCall and an extra output of
the method. The operators, weights and quantization parameters are the shipped file's own, bit for bit;
an exposed value only stops XNNPACK fusing across it, so the capture compares the copy's logits with the
file's before trusting it.

How (executorch 1.5.1's formats; schemas ship in the executorch wheel, as does its `flatc`):
- Both flatbuffers (the program; each XNNGraph payload) go through `flatc` as JSON and back. flatc prints
  floats with 6 digits, so the schemas are read with float/double retyped as uint/ulong of the same
  size: quantization scales travel as their bit patterns.
- The .pte: bytes 8..40 are the extended header (b"eh00", u32 length 32, u64 program size, u64 segment
  base, u64 segment data size); segments (delegate payloads, named data) follow the program, 128-aligned.
- An XNNPACK payload: a 32-byte header (4 zero bytes, b"XH00", u16 length 30, u32 flatbuffer offset and
  size, u32 constant data offset, u64 constant data size), the XNNGraph flatbuffer, constant data.
- XNNPACK's executor reads a value's `external_id` as its position in the DelegateCall's args, so new
  outputs take the next ids and their EValues are appended to the args, in that order.
- Memory: planned buffers are reused by later ops, so every new tensor gets its own place past the end
  of planned arena 1, which grows; nothing else ever writes there.
"""
from __future__ import annotations

import importlib.util
import json
import re
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import ArtifactError

SEGMENT_ALIGN, ARENA_ALIGN, XNN_ALIGN = 128, 64, 16
EXTENDED_HEADER = struct.Struct("<4sIQQQ")   # b"eh00", length, program size, segment base, segment data size
XNN_HEADER = struct.Struct("<4s4sHIIIQ")     # zeros, b"XH00", length, fb offset, fb size, const offset, const size
EXTERNAL_INPUT, EXTERNAL_OUTPUT = 1, 2       # XNNPACK value flags
# XNNPACK datatype -> (ExecuTorch ScalarType, bytes per element); other datatypes are not exposed
SCALAR_TYPES = {"fp32": ("FLOAT", 4), "fp16": ("HALF", 2), "qint8": ("CHAR", 1), "quint8": ("BYTE", 1),
                "int32": ("INT", 4)}
OUTPUT_FIELDS = ("output_id", "output_value_id", "output_index_id")   # the fields of an XNode that it writes
XNNPACK = "XnnpackBackend"


@dataclass(frozen=True)
class ExposedValue:
    """One value inside an XNNPACK delegate, now the method's output number `output`."""

    output: int | None           # None: already the delegate's own output, which the method does not hand out
                                 # (planned memory a later kernel may reuse): computed, in order, not fetchable
    call: int                    # which delegate call (in execution order) computes it
    node: int                    # the XNNPACK node's position in its graph
    op: str                      # the XNode type: "XNNConv2d", "XNNFullyConnected", "XNNSoftmax", ...
    shape: tuple[int, ...]       # as XNNPACK keeps it (4-D activations NHWC)
    datatype: str                # "fp32", "qint8", ...
    scale: float | None = None   # per-tensor quantization of an int8 value: real = (q - zero_point) * scale
    zero_point: int | None = None


def expose_intermediates(src: Path, dst: Path, method: str = "forward") -> list[ExposedValue]:
    """Write the copy described above to `dst`; -> the exposed values, in the order they are computed."""
    data = Path(src).read_bytes()
    magic, _, program_size, segment_base, _ = EXTENDED_HEADER.unpack_from(data, 8)
    if magic != b"eh00":
        raise ArtifactError(f"{src}: a .pte without an extended header (no segments): its delegates are not exposed")
    with tempfile.TemporaryDirectory(prefix="mvdeploy-pte-") as tmp:
        programs, graphs = _Flatc(Path(tmp), "program", _PROGRAM_SCHEMAS), _Flatc(Path(tmp), "xnnpack", _XNN_SCHEMAS)
        program = programs.to_json(data[:program_size])
        segments = [data[segment_base + s["offset"]:segment_base + s["offset"] + s["size"]]
                    for s in program["segments"]]
        plan = next((p for p in program["execution_plan"] if p["name"] == method), None)
        if plan is None:
            raise ArtifactError(f"{src}: no {method!r} method")
        exposed = _expose_plan(plan, program, segments, graphs)
        segment_size = _lay_out(program["segments"], segments)
        flatbuffer = programs.to_binary(program)
    Path(dst).write_bytes(_pte(flatbuffer, program["segments"], segments, segment_size))
    return exposed


def _expose_plan(plan: dict, program: dict, segments: list[bytes], graphs: "_Flatc") -> list[ExposedValue]:
    """Every XNNPACK delegate call of `plan` exposes its values (plan, program and segments changed in place)."""
    values, arena = plan["values"], plan["non_const_buffer_sizes"]
    end = _align(arena[1], ARENA_ALIGN)
    exposed: list[ExposedValue] = []
    calls = [i["instr_args"] for chain in plan["chains"] for i in chain["instructions"]
             if i["instr_args_type"] == "DelegateCall"]
    if len({c["delegate_index"] for c in calls}) != len(calls):
        raise ArtifactError("a delegate called more than once: its intermediate values are not exposed")
    for number, call in enumerate(calls):
        delegate = plan["delegates"][call["delegate_index"]]
        if delegate["id"] != XNNPACK:
            continue
        where = delegate["processed"]
        inline = where["location"] == "INLINE"
        payload = (bytes(program["backend_delegate_data"][where["index"]]["data"]) if inline
                   else segments[where["index"]])
        graph = graphs.to_json(_graph_bytes(payload))
        if len(call["args"]) != graph["num_externs"]:
            raise ArtifactError(f"delegate call {number}: {len(call['args'])} arguments for "
                                f"{graph['num_externs']} external values")
        for node, op, value, scale, zero_point in _node_outputs(graph):
            datatype = value["datatype"].removeprefix("xnn_datatype_")
            if value["flags"] & EXTERNAL_OUTPUT:
                exposed.append(ExposedValue(None, number, node, op, tuple(int(d) for d in value["dims"]), datatype))
                continue
            value["external_id"] = graph["num_externs"]
            value["flags"] |= EXTERNAL_OUTPUT
            graph["output_ids"].append(graph["num_externs"])
            graph["num_externs"] += 1
            shape = tuple(int(d) for d in value["dims"])
            values.append({"val_type": "Tensor", "val": {
                "scalar_type": SCALAR_TYPES[datatype][0], "sizes": list(shape), "dim_order": list(range(len(shape))),
                "allocation_info": {"memory_id": 1, "memory_offset_low": end & 0xFFFFFFFF,
                                    "memory_offset_high": end >> 32}}})
            end = _align(end + SCALAR_TYPES[datatype][1] * _count(shape), ARENA_ALIGN)
            call["args"].append(len(values) - 1)
            plan["outputs"].append(len(values) - 1)
            exposed.append(ExposedValue(len(plan["outputs"]) - 1, number, node, op, shape, datatype, scale, zero_point))
        payload = _payload(payload, graphs.to_binary(graph))
        if inline:
            program["backend_delegate_data"][where["index"]]["data"] = list(payload)
        else:
            segments[where["index"]] = payload
    arena[1] = end
    leaf = {"type": None, "context": None, "children_spec": []}        # the outputs as one flat tuple
    plan["container_meta_type"]["encoded_out_str"] = json.dumps(
        [1, {"type": "builtins.tuple", "context": "null", "children_spec": [leaf] * len(plan["outputs"])}])
    return exposed


def _node_outputs(graph: dict):
    """(node position, op, tensor value, scale, zero point) of every activation a node writes, in node order:
    not a constant, per-tensor quantized if quantized; the delegate's own outputs among them (flagged)."""
    values = {_tensor(v)["id_out"]: v for v in graph["xvalues"]}
    for position, node in enumerate(graph["xnodes"]):
        fields = node["xnode_union"]
        for name in OUTPUT_FIELDS:
            if fields.get(name) not in values:
                continue
            value = values[fields[name]]
            tensor = _tensor(value)
            if (tensor["flags"] & EXTERNAL_INPUT or tensor["constant_buffer_idx"]
                    or tensor["datatype"].removeprefix("xnn_datatype_") not in SCALAR_TYPES):
                continue
            scale = zero_point = None
            if value["xvalue_union_type"] == "XNNQuantizedTensorValue":
                quantized = value["xvalue_union"]
                if quantized["quant_params_type"] != "PerTensorQuant":
                    continue                                   # per-channel or dynamic: not an activation here
                scale = struct.unpack("<f", struct.pack("<I", quantized["quant_params"]["scale"]))[0]
                zero_point = int(quantized["quant_params"]["zero_point"])
            yield position, node["xnode_union_type"], tensor, scale, zero_point


def _tensor(value: dict) -> dict:
    union = value["xvalue_union"]
    return union["tensor_value"] if value["xvalue_union_type"] == "XNNQuantizedTensorValue" else union


def _graph_bytes(payload: bytes) -> bytes:
    _, magic, _, offset, size, _, _ = XNN_HEADER.unpack_from(payload)
    if magic != b"XH00":
        raise ArtifactError(f"an XNNPACK payload without its XH00 header (found {magic!r})")
    return payload[offset:offset + size]


def _payload(old: bytes, graph: bytes) -> bytes:
    """The payload with a new graph flatbuffer and the old constant data."""
    _, _, _, _, _, constants_at, constants_size = XNN_HEADER.unpack_from(old)
    head = _align(XNN_HEADER.size, XNN_ALIGN)
    at = head + _align(len(graph), XNN_ALIGN)
    header = XNN_HEADER.pack(b"\0" * 4, b"XH00", XNN_HEADER.size, head, len(graph), at, constants_size)
    return header.ljust(head, b"\0") + graph.ljust(at - head, b"\0") + old[constants_at:constants_at + constants_size]


def _lay_out(described: list[dict], segments: list[bytes]) -> int:
    """Segment offsets again (same order, 128-aligned); -> the segment data size."""
    offset = 0
    for entry, blob in zip(described, segments):
        offset = _align(offset, SEGMENT_ALIGN)
        entry["offset"], entry["size"] = offset, len(blob)
        offset += len(blob)
    return offset


def _pte(flatbuffer: bytes, described: list[dict], segments: list[bytes], segment_size: int) -> bytes:
    """The program flatbuffer with the extended header after its identifier, then the segments."""
    size = len(flatbuffer) + EXTENDED_HEADER.size
    base = _align(size, SEGMENT_ALIGN)
    root = struct.unpack_from("<I", flatbuffer, 0)[0] + EXTENDED_HEADER.size
    out = bytearray(struct.pack("<I", root) + flatbuffer[4:8]
                    + EXTENDED_HEADER.pack(b"eh00", EXTENDED_HEADER.size, size, base, segment_size) + flatbuffer[8:])
    for entry, blob in zip(described, segments):
        out += b"\0" * (base + entry["offset"] - len(out))
        out += blob
    return bytes(out)


def _align(n: int, to: int) -> int:
    return (n + to - 1) // to * to


def _count(shape: tuple[int, ...]) -> int:
    count = 1
    for d in shape:
        count *= d
    return count


def _executorch_file(relative: str) -> Path:
    spec = importlib.util.find_spec("executorch")
    if spec is None or not spec.submodule_search_locations:
        raise ArtifactError("exposing a .pte's intermediate values needs executorch: pip install 'mvdeploy[executorch]'")
    return Path(spec.submodule_search_locations[0]) / relative


_PROGRAM_SCHEMAS = ("exir/_serialize/program.fbs", "exir/_serialize/scalar_type.fbs")
_XNN_SCHEMAS = ("backends/xnnpack/serialization/schema.fbs",)


class _Flatc:
    """executorch's flatc: JSON <-> binary for one schema, floats retyped as same-size unsigned ints."""

    def __init__(self, workdir: Path, name: str, schemas: tuple[str, ...]):
        self.dir = workdir / name
        self.dir.mkdir()
        for relative in schemas:
            text = _executorch_file(relative).read_text()
            for kind, same_size in (("float", "uint"), ("double", "ulong")):
                text = re.sub(rf":\s*\[\s*{kind}\s*\]", f": [{same_size}]", text)
                text = re.sub(rf":\s*{kind}\s*;", f": {same_size};", text)
            (self.dir / Path(relative).name).write_text(text)
        self.schema = self.dir / Path(schemas[0]).name
        self.flatc = _executorch_file("data/bin/flatc")

    def to_json(self, blob: bytes) -> dict:
        (self.dir / "in.bin").write_bytes(blob)
        self._run("--json", "--strict-json", "--defaults-json", "--raw-binary", "-o", self.dir, self.schema,
                  "--", self.dir / "in.bin")
        return json.loads((self.dir / "in.json").read_text())

    def to_binary(self, tree: dict) -> bytes:
        for old in self.dir.glob("out.*"):
            old.unlink()
        (self.dir / "out.json").write_text(json.dumps(tree))
        self._run("--binary", "-o", self.dir, self.schema, self.dir / "out.json")
        (written,) = [p for p in self.dir.glob("out.*") if p.suffix != ".json"]   # suffix: the schema's
        return written.read_bytes()

    def _run(self, *args) -> None:
        done = subprocess.run([str(self.flatc), *map(str, args)], capture_output=True, text=True)
        if done.returncode != 0:
            raise ArtifactError(f"flatc could not rewrite the .pte: {done.stderr.strip().splitlines()[-1:]}")
