"""The ExecuTorch worker process: one loaded `forward` method, answering the runner's requests until "quit".

Started by `ExecuTorchRunner` as `python -c "from mobilevit_deploy.runners.executorch_worker import serve; serve()"`.
It speaks the LiteRT worker's protocol (litert_protocol.py: a JSON header, then .npy frames). A
handler's exception goes back as an error reply (the runner raises ArtifactError), so only a native
crash ends the worker early. fd 1 is moved to stderr first, so native prints never corrupt the protocol.
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
    """What the handlers share: the loaded method, once loaded."""

    def __init__(self):
        self.method = None

    def loaded(self):
        if self.method is None:
            raise ValueError("no program is loaded (send a load request first)")
        return self.method


def load(worker: Worker, header: dict, arrays: list[np.ndarray]) -> Reply:
    """Size the thread pool XNNPACK uses, then load the program and its `forward` method."""
    from executorch.extension.pybindings import portable_lib
    from executorch.runtime import Runtime

    portable_lib._unsafe_reset_threadpool(int(header["num_threads"]))
    program = Runtime.get().load_program(header["path"])
    method = program.load_method("forward")
    if method is None:
        raise ValueError(f"the program has no 'forward' method (methods: {sorted(program.method_names)})")
    meta = method.metadata
    worker.method = method
    return {"inputs": [_tensor_meta(meta.input_tensor_meta(i)) for i in range(meta.num_inputs())],
            "outputs": [_tensor_meta(meta.output_tensor_meta(i)) for i in range(meta.num_outputs())],
            "threads": int(portable_lib._threadpool_get_thread_count())}, []


def infer(worker: Worker, header: dict, arrays: list[np.ndarray]) -> Reply:
    import torch

    outputs = worker.loaded().execute([torch.from_numpy(arrays[0])])
    return {}, [np.ascontiguousarray(o.detach().numpy()) for o in outputs]


def time_execute(worker: Worker, header: dict, arrays: list[np.ndarray]) -> Reply:
    """Milliseconds of `execute()` alone, after `warmup` untimed ones."""
    import torch

    method, x = worker.loaded(), [torch.from_numpy(arrays[0])]
    for _ in range(header["warmup"]):
        method.execute(x)
    times = []
    for _ in range(header["repeats"]):
        start = time.perf_counter()
        method.execute(x)
        times.append((time.perf_counter() - start) * 1e3)
    return {"times_ms": times}, []


HANDLERS: dict[str, Callable[[Worker, dict, list[np.ndarray]], Reply]] = {
    "load": load,
    "infer": infer,
    "time": time_execute,
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


def _tensor_meta(info) -> dict:
    return {"shape": [int(s) for s in info.sizes()], "dtype": int(info.dtype())}


if __name__ == "__main__":
    serve()
