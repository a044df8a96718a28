"""What this install can do: each feature's extra (pyproject.toml's optional dependencies) and the one line
that says how to get a missing one.

The core needs none of them. A target declares its own `extra` and `requires` (mobilevit_deploy.targets);
the features below are the ones that are not targets. `mvdeploy doctor` lists them all.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass

DISTRIBUTION = "mvdeploy"                 # the name pip knows this package by


def install_line(extra: str) -> str:
    """`pip install "mvdeploy[tflite]"`: what a user types to get `extra`."""
    return f'pip install "{DISTRIBUTION}[{extra}]"'


def missing_modules(modules: tuple[str, ...]) -> list[str]:
    """The modules of `modules` that cannot be imported here (looked up, not imported)."""
    return [m for m in modules if importlib.util.find_spec(m) is None]


def needs(what: str, extra: str, modules: tuple[str, ...], also: str = "") -> str | None:
    """None when every module imports; else the one line: `coreml needs: pip install "mvdeploy[coreml]"
    (coremltools is not installed)`. `also`: a step pip's extras cannot express."""
    gone = missing_modules(modules)
    if not gone:
        return None
    verb = "is" if len(gone) == 1 else "are"
    return f"{what} needs: {install_line(extra)}{also} ({', '.join(gone)} {verb} not installed)"


@dataclass(frozen=True)
class Feature:
    """Something an extra enables that is not a target of its own."""

    name: str
    extra: str
    requires: tuple[str, ...]              # importable modules it needs
    enables: str                           # what it gives, in the words of the CLI
    also: str = ""                         # a step the extra cannot express

    def unavailable_reason(self) -> str | None:
        return needs(self.name, self.extra, self.requires, self.also)


ONNX2TF_PIN = "onnx2tf==1.29.24"
ONNX2TF = Feature("onnx2tf", "onnx2tf", ("onnx2tf", "tensorflow", "onnxsim"),
                  "--target tflite --converter onnx2tf",
                  also=f" and pip install --no-deps {ONNX2TF_PIN} (its own pins clash with the rest)")
RAY = Feature("Ray", "ray", ("ray",), "report --workers N / --ray-address")
HF = Feature("transformers", "hf", ("transformers",),
             "Hugging Face's own MobileViT / Swin, to compare with (folders load without it)")
FEATURES = (ONNX2TF, RAY, HF)
