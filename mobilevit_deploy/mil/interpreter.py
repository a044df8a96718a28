"""Run an ML Program, read back from a saved .mlpackage, op by op in numpy.

This is a reference, not a runtime: it shows that the converted graph and its stored weights compute
what the PyTorch model computes, with each op's result rounded to the dtype the op declares (so an
fp16 program is checked as fp16). It says nothing about Apple's CPU/GPU/Neural Engine kernels.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np

from ..errors import ArtifactError
from .ops import OPS, Args
from .program import Op, Program, ValueType, load_program

CONSTANT_OPS = {"const"}


def unsupported_ops(program: Program, ops: dict = OPS) -> dict[str, str]:
    """Op types the interpreter cannot run -> the name of the first op of that type."""
    missing: dict[str, str] = {}
    for op in program.ops:
        if op.type not in CONSTANT_OPS and (op.type not in ops or op.has_blocks):
            missing.setdefault(op.type, op.name)
    return missing


def round_to(value, vtype: ValueType):
    """An op result as the program declares it: fp16 results are rounded to fp16 (and kept as
    float32 holding fp16 values, so the next op computes in float32); other dtypes are cast."""
    if vtype.kind != "tensor" or vtype.numpy is None or not isinstance(value, (np.ndarray, np.generic, int, float)):
        return value
    if vtype.dtype == "fp16":
        return np.asarray(value).astype(np.float16).astype(np.float32)
    return np.asarray(value).astype(vtype.numpy)


def _widen(value):
    """Inline fp16 values are computed with in float32, like every other fp16 tensor."""
    return value.astype(np.float32) if isinstance(value, np.ndarray) and value.dtype == np.float16 else value


def _validate_shape(op: Op, name: str, value, vtype: ValueType) -> None:
    if vtype.kind != "tensor" or vtype.shape is None or not isinstance(value, np.ndarray):
        return
    declared = vtype.shape
    if len(declared) != value.ndim or any(d is not None and d != s for d, s in zip(declared, value.shape)):
        raise ArtifactError(
            f"op {op.name} ({op.type}) computed {name} with shape {list(value.shape)}, "
            f"the program declares {vtype}"
        )


class Interpreter:
    """A loaded program, ready to run. Constants (and compressed constants) are materialized once."""

    def __init__(self, program: Program, ops: dict | None = None):
        self.program = program
        self.ops = OPS if ops is None else ops
        missing = unsupported_ops(program, self.ops)
        if missing:
            listed = ", ".join(f"{t} (first: {n})" for t, n in sorted(missing.items()))
            raise ArtifactError(
                f"{Path(program.path).name}: the reference interpreter does not implement op(s) {listed}; "
                "nothing was run"
            )
        self.types: dict[str, ValueType] = {v.name: v.type for v in program.inputs}
        for op in program.ops:
            self.types.update({v.name: v.type for v in op.outputs})
        self.constants: dict[str, object] = {}
        self.steps: list[Op] = []
        for op in program.ops:
            if op.type == "const":
                out = op.outputs[0]
                self.constants[out.name] = round_to(op.attributes["val"], out.type)
            elif op.type.startswith("constexpr_") and all(n in self.constants for n in op.input_names()):
                self._store(op, self._execute(op, self.constants), self.constants)
            else:
                self.steps.append(op)
        self._last_use = self._last_uses()

    @classmethod
    def from_package(cls, path: Path, ops: dict | None = None) -> "Interpreter":
        return cls(load_program(path), ops)

    @property
    def input_names(self) -> list[str]:
        return [v.name for v in self.program.inputs]

    def _last_uses(self) -> dict[str, int]:
        last: dict[str, int] = {}
        for i, op in enumerate(self.steps):
            for name in op.input_names():
                last[name] = i
        return last

    def _args(self, op: Op, env: dict) -> Args:
        # iOS 16 constexpr ops carry their parameters as attributes rather than inputs
        values = {key: [value] for key, value in op.attributes.items() if key != "name"}
        for key, bindings in op.inputs.items():
            values[key] = [env[b.name] if b.name is not None else _widen(b.value) for b in bindings]
        return Args(op, values)

    def _execute(self, op: Op, env: dict):
        try:
            return self.ops[op.type](self._args(op, env))
        except ArtifactError:
            raise
        except KeyError as e:
            raise ArtifactError(f"op {op.name} ({op.type}) reads {e}, which no earlier op produced") from None
        except Exception as e:                   # a kernel failing on this program's data
            raise ArtifactError(f"op {op.name} ({op.type}) failed in the reference interpreter: {e}") from e

    def _store(self, op: Op, result, env: dict) -> None:
        results = result if len(op.outputs) > 1 else (result,)
        if len(results) != len(op.outputs):
            raise ArtifactError(f"op {op.name} ({op.type}) produced {len(results)} outputs, the program declares {len(op.outputs)}")
        for var, value in zip(op.outputs, results):
            value = round_to(value, var.type)
            _validate_shape(op, var.name, value, var.type)
            env[var.name] = value

    def run(self, inputs: dict[str, np.ndarray], keep: Iterable[str] | str | None = None) -> dict[str, object]:
        """Run the program on named inputs -> {name: value} for its outputs plus the kept tensors.

        keep: None (outputs only), a set of tensor names, or 'all' (every op result). Kept values
        are in their declared precision (an fp16 tensor is returned as float32 holding fp16 values).
        """
        keep_all = keep == "all"
        keep_names = set() if keep is None or keep_all else set(keep)
        unknown = keep_names - set(self.types)
        if unknown:
            raise ArtifactError(f"cannot keep {sorted(unknown)[:3]}: no such tensor in the program")
        env = dict(self.constants)
        for var in self.program.inputs:
            if var.name not in inputs:
                raise ArtifactError(f"missing input '{var.name}' (the program takes {', '.join(self.input_names)})")
            value = round_to(np.asarray(inputs[var.name]), var.type)
            _validate_shape(Op("input", var.name, {}, (var,)), var.name, value, var.type)
            env[var.name] = value
        kept: dict[str, object] = {name: env[name] for name in keep_names if name in env}
        protected = set(self.program.outputs)
        for i, op in enumerate(self.steps):
            self._store(op, self._execute(op, env), env)
            for var in op.outputs:
                if keep_all or var.name in keep_names:
                    kept[var.name] = env[var.name]
            for name in op.input_names():
                if self._last_use.get(name) == i and name not in protected and name not in self.constants:
                    env.pop(name, None)
        missing = [name for name in self.program.outputs if name not in env]
        if missing:
            raise ArtifactError(f"the program never computes its output(s) {missing}")
        return {**kept, **{name: env[name] for name in self.program.outputs}}
