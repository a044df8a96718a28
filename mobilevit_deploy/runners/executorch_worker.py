"""The ExecuTorch worker process: one loaded `forward` method, answering the runner's requests until "quit".

Started by `ExecuTorchRunner` as `python -c "from mobilevit_deploy.runners.executorch_worker import serve; serve()"`.
Each request names a handler in HANDLERS; the loop that answers them (worker_protocol.serve: a JSON
header, then .npy frames; a handler's exception as an error reply) is shared with every worker engine.
"""
from __future__ import annotations

import numpy as np

from . import worker_protocol
from .timing import time_calls
from .worker_protocol import Handler, Reply, Worker


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
    worker.engine = method
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
    return {"times_ms": time_calls(lambda: method.execute(x), header["repeats"], header["warmup"])}, []


HANDLERS: dict[str, Handler] = {
    "load": load,
    "infer": infer,
    "time": time_execute,
}


def serve() -> None:
    """Answer the runner's requests until "quit" or end of input."""
    worker_protocol.serve(HANDLERS, Worker("program"))


def _tensor_meta(info) -> dict:
    return {"shape": [int(s) for s in info.sizes()], "dtype": int(info.dtype())}


if __name__ == "__main__":
    serve()
