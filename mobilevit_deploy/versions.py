"""Package versions, looked up in one place: reports, bundles, model metadata and engine names read them here."""
from __future__ import annotations

import sys
from importlib.metadata import PackageNotFoundError, version

NOT_INSTALLED = "not installed"

# What a report records: everything that can change a converted file or a measured number.
TOOLS = ("mvdeploy", "torch", "numpy", "onnxruntime", "litert-torch", "ai-edge-litert", "torchao",
         "coremltools", "onnx2tf", "tensorflow", "executorch")


def version_of(package: str, missing: str = NOT_INSTALLED) -> str:
    """The installed distribution's version, or `missing`."""
    try:
        return version(package)
    except PackageNotFoundError:
        return missing


def tool_versions() -> dict[str, str]:
    return {"python": sys.version.split()[0], **{package: version_of(package) for package in TOOLS}}
