"""The LiteRT worker process: one interpreter, answering the runner's requests until "quit".

Started by `LiteRTRunner` as `python -c "from mobilevit_deploy.runners.litert_worker import serve; serve()"`.
Each request names a handler in HANDLERS; a handler's exception goes back to the runner as an
error reply (the runner raises ArtifactError), so only a native crash ends the worker early.
The protocol is on the original stdin/stdout; fd 1 is moved to stderr first, so anything native
code prints can never corrupt it.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Callable

import numpy as np

from .litert_protocol import read_message, write_message

Reply = tuple[dict, list[np.ndarray]]


class Worker:
    """What the handlers share: the interpreter, once loaded."""

    def __init__(self):
        self.interpreter = None

    def loaded(self):
        if self.interpreter is None:
            raise ValueError("no model is loaded (send a load request first)")
        return self.interpreter


def load(worker: Worker, header: dict, arrays: list[np.ndarray]) -> Reply:
    from ai_edge_litert import interpreter as litert

    options = {"model_path": header["path"], "num_threads": header["num_threads"]}
    if header["preserve_all_tensors"]:
        options["experimental_preserve_all_tensors"] = True
        options["experimental_op_resolver_type"] = litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    interpreter = litert.Interpreter(**options)
    interpreter.allocate_tensors()
    worker.interpreter = interpreter
    return {"inputs": _details(interpreter.get_input_details()),
            "outputs": _details(interpreter.get_output_details())}, []


def infer(worker: Worker, header: dict, arrays: list[np.ndarray]) -> Reply:
    interpreter = worker.loaded()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], arrays[0])
    interpreter.invoke()
    return {}, [interpreter.get_tensor(o["index"]) for o in interpreter.get_output_details()]


def time_invoke(worker: Worker, header: dict, arrays: list[np.ndarray]) -> Reply:
    """Milliseconds of `invoke()` alone, after `warmup` untimed ones."""
    interpreter = worker.loaded()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], arrays[0])
    for _ in range(header["warmup"]):
        interpreter.invoke()
    times = []
    for _ in range(header["repeats"]):
        start = time.perf_counter()
        interpreter.invoke()
        times.append((time.perf_counter() - start) * 1e3)
    return {"times_ms": times}, []


def tensor_details(worker: Worker, header: dict, arrays: list[np.ndarray]) -> Reply:
    return {"tensors": _details(worker.loaded().get_tensor_details())}, []


def tensor(worker: Worker, header: dict, arrays: list[np.ndarray]) -> Reply:
    return {}, [worker.loaded().get_tensor(header["index"])]


def ops(worker: Worker, header: dict, arrays: list[np.ndarray]) -> Reply:
    """Every op in execution order: index, op name, input and output tensor indices."""
    return {"ops": [{"index": int(op["index"]), "op_name": str(op["op_name"]),
                     "inputs": [int(i) for i in op["inputs"]], "outputs": [int(i) for i in op["outputs"]]}
                    for op in worker.loaded()._get_ops_details()]}, []


def infer_tensors(worker: Worker, header: dict, arrays: list[np.ndarray]) -> Reply:
    """One inference, then the tensors asked for by index (intermediates need preserve_all_tensors)."""
    interpreter = worker.loaded()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], arrays[0])
    interpreter.invoke()
    return {}, [interpreter.get_tensor(int(i)) for i in header["indices"]]


def delegation(worker: Worker, header: dict, arrays: list[np.ndarray]) -> Reply:
    """Which ops the default delegate (XNNPACK) takes. A second interpreter with delegate node fusion off
    has one DELEGATE node per delegated op; an op whose outputs a DELEGATE node produces was taken."""
    from ai_edge_litert import interpreter as litert

    probe = litert.Interpreter(model_path=header["path"], num_threads=header["num_threads"],
                               experimental_disable_delegate_node_fusion=True)
    probe.allocate_tensors()
    nodes = probe._interpreter
    producer, delegated_outputs, ops = {}, set(), []
    for i in range(nodes.NumNodes()):
        name, outputs = nodes.NodeName(i), [int(o) for o in nodes.NodeOutputs(i)]
        if name == "DELEGATE":
            delegated_outputs.update(outputs)
        else:
            ops.append(name)
            producer.update({o: len(ops) - 1 for o in outputs})
    taken = {producer[o] for o in delegated_outputs if o in producer}
    kept: dict[str, int] = {}
    for i, name in enumerate(ops):
        if i not in taken:
            kept[name] = kept.get(name, 0) + 1
    return {"ops": len(ops), "delegated": len(taken), "not_delegated": kept}, []


HANDLERS: dict[str, Callable[[Worker, dict, list[np.ndarray]], Reply]] = {
    "delegation": delegation,
    "load": load,
    "infer": infer,
    "time": time_invoke,
    "tensor_details": tensor_details,
    "tensor": tensor,
    "ops": ops,
    "infer_tensors": infer_tensors,
}


def serve() -> None:
    """Read a request, answer it, until "quit" or end of input."""
    protocol_out = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)                    # native prints go to stderr, never into the protocol
    sys.stdout = sys.stderr
    protocol_in = sys.stdin.buffer
    worker = Worker()
    while True:
        try:
            header, arrays = read_message(protocol_in)
        except EOFError:
            return
        op = header["op"]
        if op == "quit":
            return
        try:
            handler = HANDLERS.get(op)
            if handler is None:
                raise ValueError(f"unknown request {op!r}")
            reply, out = handler(worker, header, arrays)
        except Exception as e:       # reported to the parent as an ArtifactError with this message
            message = str(e).strip().splitlines()
            write_message(protocol_out, {"ok": False, "error": f"{type(e).__name__}: "
                                                              + (message[0] if message else "")})
            continue
        write_message(protocol_out, {**reply, "ok": True}, out)


def _details(details: list[dict]) -> list[dict]:
    """The interpreter's tensor details as JSON: index, name, shape, dtype name, scale (None: float), zero_point."""
    out = []
    for d in details:
        scale, zero_point = d.get("quantization", (0.0, 0))
        out.append({"index": int(d["index"]), "name": d["name"], "shape": [int(s) for s in d["shape"]],
                    "dtype": np.dtype(d["dtype"]).name, "scale": float(scale) or None,
                    "zero_point": int(zero_point)})
    return out


if __name__ == "__main__":
    serve()
