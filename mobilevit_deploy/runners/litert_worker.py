"""The LiteRT worker process: one interpreter, answering the runner's requests until "quit".

Started by `LiteRTRunner` as `python -c "from mobilevit_deploy.runners.litert_worker import serve; serve()"`.
Each request names a handler in HANDLERS; the loop that answers them, and what happens to a handler's
exception, is worker_protocol.serve, shared with every worker engine.
"""
from __future__ import annotations

import numpy as np

from . import worker_protocol
from .timing import time_calls
from .worker_protocol import Handler, Reply, Worker


def load(worker: Worker, header: dict, arrays: list[np.ndarray]) -> Reply:
    from ai_edge_litert import interpreter as litert

    options = {"model_path": header["path"], "num_threads": header["num_threads"]}
    if header["preserve_all_tensors"]:
        options["experimental_preserve_all_tensors"] = True
        options["experimental_op_resolver_type"] = litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    interpreter = litert.Interpreter(**options)
    interpreter.allocate_tensors()
    worker.engine = interpreter
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
    return {"times_ms": time_calls(interpreter.invoke, header["repeats"], header["warmup"])}, []


def tensor_details(worker: Worker, header: dict, arrays: list[np.ndarray]) -> Reply:
    return {"tensors": _details(worker.loaded().get_tensor_details())}, []


def tensor(worker: Worker, header: dict, arrays: list[np.ndarray]) -> Reply:
    return {}, [worker.loaded().get_tensor(header["index"])]


def ops(worker: Worker, header: dict, arrays: list[np.ndarray]) -> Reply:
    """Every op in execution order: index, op name, input and output tensor indices."""
    return {"ops": [{"index": int(op["index"]), "op_name": str(op["op_name"]),
                     "inputs": [int(i) for i in op["inputs"]], "outputs": [int(i) for i in op["outputs"]]}
                    for op in worker.loaded()._get_ops_details()]}, []


def infer_intermediates(worker: Worker, header: dict, arrays: list[np.ndarray]) -> Reply:
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


HANDLERS: dict[str, Handler] = {
    "delegation": delegation,
    "load": load,
    "infer": infer,
    "time": time_invoke,
    "tensor_details": tensor_details,
    "tensor": tensor,
    "ops": ops,
    "infer_intermediates": infer_intermediates,
}


def serve() -> None:
    """Answer the runner's requests until "quit" or end of input."""
    worker_protocol.serve(HANDLERS, Worker("model"))


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
