"""The weight audit: every weight and bias a file stores, matched to the model's parameter and compared.

Pure numpy. A format reader (`formats/<format>.py`) lists the file's constant tensors as `StoredTensor`s:
values dequantized to float, and per value the most a correct conversion may move it (half a quantization
step for int8 and int32 biases, half an fp16 unit in the last place, fp32 rounding). `audit` matches each
one to a parameter of the fused PyTorch model (the model the converter was given):

1. by value: the parameter of the same element count, in any axis order (TFLite keeps convolutions as
   OHWI, PyTorch as OIHW), nearest in relative L2 distance, when that distance is under MATCH_DISTANCE;
2. a tensor that matches nothing by value (a zeroed bias, a buffer with flipped bytes) is paired with a
   parameter nothing matched: the one whose module the tensor's name carries, else the only one left of
   its shape (ambiguity leaves it unmatched, never guessed).

A matched tensor outside its bound fails the audit, named with the parameter's module. Tensors matched
to nothing (constants the converter computed: shapes, masks, gathered position biases) are counted.
Normalization epsilons are checked apart: each must be among the file's scalar constants (where the
converter keeps them as constants). What it cannot see: other arithmetic constants (a scale folded into
an op, an attention mask), computed tensors it cannot match, and any change within the rounding bound.
The integrity comparison covers those.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

MATCH_DISTANCE = 0.5    # |stored - param| / |param| (L2) below which a stored tensor is taken as that param
SLACK = 1e-3            # relative room on every bound (float arithmetic of the dequantization itself)
FOLD_ROUNDING = 2.0 ** -20   # of the summed magnitudes: a converter's fp32 sum of a folded bias, any order
SHOWN = 5               # failures named one by one in the report; the rest counted


@dataclass(frozen=True)
class StoredTensor:
    """One constant tensor of a file, as float values with the most a correct conversion may move each."""

    name: str               # the file's own name for it (TFLite names carry the module path when they can)
    values: np.ndarray      # dequantized, in the file's layout
    bound: np.ndarray       # per value (broadcastable): the allowed |stored - param|
    kind: str               # "int8", "int32 bias", "fp16", "fp32"


@dataclass(frozen=True)
class Folded:
    """A parameter a converter computes (a sum in fp32), with the rounding its sum may carry."""

    values: np.ndarray
    rounding: np.ndarray


@dataclass
class Audit:
    """What the audit found: how many tensors were compared, matched, left unmatched, and which failed."""

    stored: int = 0
    matched: int = 0
    unmatched: list[str] = field(default_factory=list)      # stored tensors matched to no parameter
    failures: list[str] = field(default_factory=list)       # one line per tensor outside its bound
    worst: float = 0.0      # the largest |stored - param| / bound among matched tensors (<= 1: within)
    not_read: str | None = None     # why a format's weights could not be read (the audit did not run)

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict:
        if self.not_read is not None:
            return {"read": False, "why": self.not_read}
        return {"read": True, "stored": self.stored, "matched": self.matched, "unmatched": len(self.unmatched),
                "worst_in_bounds": round(self.worst, 3), "failures": self.failures}

    def summary(self) -> str:
        if self.not_read is not None:
            return f"weights not audited: {self.not_read}"
        verdict = "all within bounds" if self.passed else f"{len(self.failures)} outside their bounds"
        return (f"weights: {self.matched} of {self.stored} stored tensors matched to parameters, {verdict} "
                f"(worst at {self.worst:.2f} of its bound); {len(self.unmatched)} unmatched (computed constants)")


def rounding_bound(values: np.ndarray) -> np.ndarray:
    """fp16: one unit in the last place: rounding to fp16 moves a value by half a unit, and a converter that
    computes a weight in fp32 first (folds, fusions) can land on the neighbour (coremltools, measured: 1 of
    240 values of one bias at 1.4 half-units). fp32: 8 units in the last place plus 1/4 unit of the
    tensor's largest value, as a converter that folds BatchNorm itself in fp32 lands a few units from our
    float64 fold (more on a bias, where the fold's terms cancel)."""
    magnitude = np.abs(values.astype(np.float64))
    if values.dtype == np.float16:
        return np.maximum(magnitude * 2.0 ** -10, 2.0 ** -24)
    return magnitude * 2.0 ** -20 + (magnitude.max() if magnitude.size else 0.0) * 2.0 ** -22 + 1e-12


def not_read(why: str) -> Audit:
    return Audit(not_read=why)


def audit(stored: list[StoredTensor], params: dict[str, np.ndarray | Folded],
          epsilons: dict[float, list[str]] | None = None) -> Audit:
    """Match every stored tensor (two values or more) to a parameter and compare within its bound; each
    normalization epsilon of the model (`epsilons`: value -> its modules) must be among the file's
    float scalar constants, as converters that decompose a norm store it (pass None where they do not)."""
    tensors = [t for t in stored if t.values.size >= 2]
    values = {name: p.values if isinstance(p, Folded) else p for name, p in params.items()}
    pool = {name: np.asarray(v, dtype=np.float64) for name, v in values.items() if np.size(v) >= 2}
    rounding = {name: np.max(p.rounding) for name, p in params.items() if isinstance(p, Folded)}
    result = Audit(stored=len(tensors))
    by_size: dict[int, list[str]] = {}
    for name, p in pool.items():
        by_size.setdefault(p.size, []).append(name)

    matches: dict[int, tuple[str, np.ndarray]] = {}         # stored index -> (param name, param in stored layout)
    for i, t in enumerate(tensors):
        best = min(((d, name, arranged) for name in by_size.get(t.values.size, ())
                    for arranged in _arrangements(pool[name], t.values.shape)
                    for d in [_distance(t.values, arranged)]), key=lambda c: c[0], default=None)
        if best is not None and best[0] < MATCH_DISTANCE:
            matches[i] = (best[1], best[2])
    _pair_leftovers(tensors, pool, by_size, matches)

    for i, t in enumerate(tensors):
        if i not in matches:
            result.unmatched.append(t.name)
            continue
        name, param = matches[i]
        result.matched += 1
        bound = np.asarray(t.bound, np.float64) * (1 + SLACK) + rounding.get(name, 0.0) + 1e-30
        excess = np.abs(t.values.astype(np.float64) - param) / bound
        excess = np.where(np.isfinite(excess), excess, np.inf)
        worst = float(excess.max())
        if worst > 1.0:
            result.failures.append(_failure(name, t, excess))
        else:
            result.worst = max(result.worst, worst)
    scalars = {float(np.float32(t.values.reshape(-1)[0])) for t in stored
               if t.values.size == 1 and t.kind in ("float32", "float16")}
    for eps, modules in (epsilons or {}).items():
        if float(np.float32(eps)) not in scalars and float(np.float16(eps)) not in scalars:
            result.failures.append(f"the normalization epsilon {eps:g} of {len(modules)} module(s) ({modules[0]}, ...) "
                                   f"is not among the file's scalar constants")
    if len(result.failures) > SHOWN:
        result.failures = [*result.failures[:SHOWN], f"... and {len(result.failures) - SHOWN} more tensors"]
    return result


def with_folded_norms(params: dict[str, np.ndarray | Folded]) -> dict[str, np.ndarray | Folded]:
    """`params` plus what converters store when they fold a normalization's affine into the linear layer
    after it (litert-torch does, for LayerNorm -> Linear): for each norm (a module whose only parameters
    are a 1-D weight and bias) and each linear layer under the norm's parent taking the norm's width,
    `W * gamma` and `b + W @ beta`, named '<linear> (+<norm> folded).weight' / '.bias'."""
    modules: dict[str, dict[str, np.ndarray]] = {}
    for name, value in params.items():
        if not isinstance(value, Folded):              # already computed: not folded again
            modules.setdefault(module_of(name), {})[name.rsplit(".", 1)[-1]] = np.asarray(value, np.float64)
    norms = {m: p for m, p in modules.items()
             if set(p) == {"weight", "bias"} and p["weight"].ndim == 1 and p["bias"].shape == p["weight"].shape}
    out = dict(params)
    for norm, affine in norms.items():
        parent = norm.rsplit(".", 1)[0] + "." if "." in norm else ""
        for linear, p in modules.items():
            weight = p.get("weight")
            if (not linear.startswith(parent) or weight is None or weight.ndim != 2
                    or weight.shape[1] != affine["weight"].size):
                continue
            label = f"{linear} (+{norm.rsplit('.', 1)[-1]} folded)"
            out[f"{label}.weight"] = weight * affine["weight"]
            out[f"{label}.bias"] = Folded(p.get("bias", 0.0) + weight @ affine["bias"],
                                          FOLD_ROUNDING * (np.abs(p.get("bias", 0.0)) + np.abs(weight) @ np.abs(affine["bias"])))
    return out


def module_of(param: str) -> str:
    """'stages.2.conv.weight' -> 'stages.2.conv'."""
    return param.rsplit(".", 1)[0] if "." in param else param


def _failure(param: str, t: StoredTensor, excess: np.ndarray) -> str:
    off = int(np.count_nonzero(excess > 1.0))
    worst = float(excess.max())
    how = "non-finite values" if not np.isfinite(worst) else f"up to {worst:.1f}x its bound"
    where = "/".join(t.name.split(";")[-2 if t.name.endswith(";") else -1].split("/")[-2:])
    return (f"{param} (module {module_of(param)}): {off} of {excess.size} stored {t.kind} values off, {how} "
            f"(file tensor ...{where[-80:]})")


def _distance(stored: np.ndarray, param: np.ndarray) -> float:
    s = np.where(np.isfinite(stored), stored, 0.0).astype(np.float64)
    norm = float(np.linalg.norm(param))
    return float(np.linalg.norm(s - param)) / norm if norm > 0 else (0.0 if not s.any() else np.inf)


def _arrangements(param: np.ndarray, shape: tuple[int, ...]):
    """The parameter's axis orders that give the stored tensor's shape (unit axes aside), in that shape."""
    squeezed = [d for d in param.shape if d != 1]
    target = [d for d in shape if d != 1]
    if sorted(squeezed) != sorted(target):
        return
    core = param.reshape(squeezed)
    seen = set()
    for perm in itertools.permutations(range(len(squeezed))):
        if [squeezed[a] for a in perm] == target and perm not in seen:
            seen.add(perm)
            yield core.transpose(perm).reshape(shape)


def _pair_leftovers(tensors, pool, by_size, matches) -> None:
    """Stored tensors nothing matched by value, paired with parameters nothing matched: by the module
    the tensor's name carries, else when the parameters left of its shape are all one parameter (with
    or without a norm folded in); the nearest of those. Ambiguity leaves the tensor unmatched. By shape
    alone, a variant that exists only folded (the bias a fold gives a bias-free layer) is never taken: a
    converter that does not fold stores zeros there (coremltools, for swin's patch merging)."""
    taken = {_plain(name) for name, _ in matches.values()}
    for i in [i for i in range(len(tensors)) if i not in matches]:
        t = tensors[i]
        candidates = [(n, a) for n in by_size.get(t.values.size, ()) if _plain(n) not in taken
                      for a in _arrangements(pool[n], t.values.shape)]
        named = [(n, a) for n, a in candidates if _names_module(t.name, module_of(n))]
        shaped = [(n, a) for n, a in candidates if _plain(n) in pool]
        for group in (named, shaped):
            if group and len({_plain(n) for n, _ in group}) == 1:
                matches[i] = min(group, key=lambda c: _distance(t.values, c[1]))
                taken.add(_plain(matches[i][0]))
                break


def _plain(param: str) -> str:
    """'a.fc1 (+norm2 folded).bias' -> 'a.fc1.bias': the parameter a folded variant is made of."""
    head, _, tail = param.partition(" (+")
    return head + ("." + tail.rsplit(".", 1)[-1] if tail else "")


def _names_module(stored_name: str, module: str) -> bool:
    """Whether a converter's tensor name (`.../Sequential_layers/SwinStage_1/.../Linear_qkv;...`) ends
    in the path of `module` (`layers.1.blocks.0.attn.qkv`): each path step is the attribute after a class name."""
    path = module.split(" ")[0].split(".")
    for scope in stored_name.split(";"):
        steps = [part.rsplit(".", 1)[-1].split("_", 1)[1] for part in scope.split("/")
                 if "_" in part.rsplit(".", 1)[-1]]
        if len(steps) >= len(path) and steps[-len(path):] == path:
            return True
    return False
