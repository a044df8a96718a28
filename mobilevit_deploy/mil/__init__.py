"""A reference interpreter for Core ML ML Programs, read back from a saved .mlpackage.

    from mobilevit_deploy.mil import Interpreter
    interp = Interpreter.from_package("model.mlpackage")
    outputs = interp.run({"image": x}, keep="all")     # every intermediate tensor, by MIL name

It checks the converted graph and its stored weights in numpy (fp16 ops rounded to fp16); it does
not model Apple's GPU / Neural Engine kernels. Unknown ops fail before anything runs.
"""
from .interpreter import Interpreter, unsupported_ops
from .ops import OPS
from .program import Program, load_program

__all__ = ["Interpreter", "OPS", "Program", "load_program", "unsupported_ops"]
