"""Float fallback: the modules a quantized conversion leaves in float (`--keep-float`).

The names are the model's own (qualified names, as `named_modules()` of the model as exported: fused
when the conversion fuses); each target leaves them out of its quantizer through its own per-module
configuration and checks in the written file that they are no longer quantized (`Target.float_fallback`
says which precisions can). This module only parses and validates the names and words the note.
"""
from __future__ import annotations

from typing import Callable, Iterable, Sequence

from torch import nn

from ..errors import InvalidValueError

FALLBACK_KINDS = ("Conv2d", "Linear")   # the layers a float fallback takes: those whose weights int8 quantizes


def parse_modules(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """"a.b,c.d" (or a list of names) as names, in order, each once; None or "" -> ()."""
    if not text:
        return ()
    items = text.split(",") if isinstance(text, str) else list(text)
    names = [str(item).strip() for item in items]
    if any(not name for name in names):
        raise InvalidValueError(f"--keep-float: an empty module name in {text!r} (MODULE[,MODULE...])")
    return tuple(dict.fromkeys(names))


def require_modules(model: nn.Module, names: Iterable[str]) -> None:
    """Each name must be a module of `model` (not the root); an unknown one is one line with the closest
    names (the model has hundreds: they are not all listed)."""
    import difflib

    known = [name for name, _ in model.named_modules() if name]
    have = set(known)
    for name in names:
        if name not in have:
            close = difflib.get_close_matches(name, known, n=3)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise InvalidValueError(f"--keep-float: {name!r} is not a module of the model as exported{hint} "
                                    "(the report's per-layer table and `mvdeploy debug` name them)")


def kept_note(modules: Sequence[str]) -> str:
    """What a file's notes say about its float fallback."""
    return f"kept in float (--keep-float, checked in the file): {', '.join(modules)}"


def outside(modules: Sequence[str]) -> Callable:
    """A PT2E annotation filter: True for a graph node that no module in `modules` (nor a child) made,
    read from the node's nn_module_stack with torchao's own module-name filter."""
    from torchao.quantization.pt2e.quantizer.utils import get_module_name_filter

    inside = [get_module_name_filter(name) for name in modules]
    return lambda node: not any(f(node) for f in inside)
