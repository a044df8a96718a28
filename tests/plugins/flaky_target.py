"""A test-only target, installed for a test's subprocesses through a dist-info entry point (the way any
third-party target registers): the ONNX target, but its fp16 conversion always raises, and with
MVDEPLOY_TEST_KILL=1 the worker running an fp32 conversion dies on the first attempt. Every attempt is
appended to the file named by MVDEPLOY_TEST_ATTEMPTS, so a test can count Ray's retries."""
import os
from pathlib import Path

from mobilevit_deploy.parity.tolerances import FP16, FP32
from mobilevit_deploy.spec import Precision
from mvdeploy_targets.onnx import OnnxTarget


class FlakyTarget(OnnxTarget):
    name = "flaky"
    suffix = ".flaky.onnx"                     # never the real ONNX target's file name
    precisions = (Precision.fp32, Precision.fp16)
    tolerances = {Precision.fp32: FP32, Precision.fp16: FP16}     # its own, declared here like any target's

    def convert(self, model, spec, out_path, calibration=None):
        log = Path(os.environ["MVDEPLOY_TEST_ATTEMPTS"])
        with log.open("a") as f:
            f.write(f"{spec.precision.value} {os.getpid()}\n")
        attempts = log.read_text().split().count(spec.precision.value)
        if spec.precision is Precision.fp16:
            raise RuntimeError("injected conversion failure")
        if os.environ.get("MVDEPLOY_TEST_KILL") == "1" and attempts == 1:
            os._exit(1)                        # the worker process dies mid-task
        return super().convert(model, spec, out_path, calibration)


TARGET = FlakyTarget()
