"""One small numpy function per MIL op, and the registry `OPS` that maps an op type to it.

Every kernel receives an `Args` (the op's inputs by MIL parameter name) and returns the op's
output value, or a tuple for ops with several outputs. Kernels compute in float32 (the interpreter
hands them fp16 tensors already widened) and the interpreter rounds each result to the dtype the
op declares, so an fp16 program behaves like an fp16 program: every op's output is an fp16 value.

Semantics follow the MIL op reference (coremltools `converters/mil/mil/ops/defs/iOS15..iOS18`),
including its defaults for optional inputs. Convolution and pooling go through torch's CPU kernels
(float32); everything else is plain numpy.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from ..errors import ArtifactError
from .program import NUMPY_BY_NAME, Op


class Args:
    """The inputs of one op, by MIL parameter name."""

    def __init__(self, op: Op, values: dict[str, list]):
        self.op = op
        self.values = values

    def __contains__(self, key: str) -> bool:
        return key in self.values

    def __getitem__(self, key: str):
        if key not in self.values:
            raise ArtifactError(f"op {self.op.name} ({self.op.type}) has no input '{key}'")
        return self.values[key][0]

    def get(self, key: str, default=None):
        return self.values[key][0] if key in self.values else default

    def all(self, key: str) -> list:
        """Every argument of a variadic input (concat's `values`)."""
        return self.values[key]

    def int(self, key: str, default: int | None = None) -> int | None:
        value = self.get(key, default)
        return None if value is None else int(value)

    def ints(self, key: str, default=None) -> list[int] | None:
        value = self.get(key, default)
        return None if value is None else [int(v) for v in np.atleast_1d(value)]

    def flag(self, key: str, default: bool) -> bool:
        return bool(self.get(key, default))


Kernel = Callable[[Args], object]


# ---------------------------------------------------------------- elementwise

def _binary(fn) -> Kernel:
    return lambda a: fn(a["x"], a["y"])


def _unary(fn) -> Kernel:
    return lambda a: fn(a["x"])


def _erf(x: np.ndarray) -> np.ndarray:
    import torch

    return torch.special.erf(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _gelu(a: Args) -> np.ndarray:
    x = a["x"]
    return GELU_MODES[str(a.get("mode", "EXACT"))](x)


GELU_MODES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "EXACT": lambda x: 0.5 * x * (1.0 + _erf(x / np.float32(math.sqrt(2.0)))),
    "TANH_APPROXIMATION": lambda x: 0.5 * x * (1.0 + np.tanh(np.float32(math.sqrt(2 / math.pi)) * (x + 0.044715 * x ** 3))),
    "SIGMOID_APPROXIMATION": lambda x: x * _sigmoid(np.float32(1.702) * x),
}


def _silu(a: Args) -> np.ndarray:
    x = a["x"]
    return x * _sigmoid(x)


def _relu(a: Args) -> np.ndarray:
    return np.maximum(a["x"], 0)


def _softmax(a: Args) -> np.ndarray:
    x = a["x"]
    axis = a.int("axis", -1)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _clip(a: Args) -> np.ndarray:
    return np.clip(a["x"], a["alpha"], a["beta"])


def _cast(a: Args) -> np.ndarray:
    dtype = NUMPY_BY_NAME.get(str(a["dtype"]))
    if dtype is None:
        raise ArtifactError(f"op {a.op.name}: cast to unknown dtype '{a['dtype']}'")
    x = np.asarray(a["x"])
    if np.issubdtype(dtype, np.integer) and np.issubdtype(x.dtype, np.floating):
        x = np.trunc(x)
    return x.astype(dtype)


# ---------------------------------------------------------------- linear algebra

def _linear(a: Args) -> np.ndarray:
    y = a["x"] @ a["weight"].T
    bias = a.get("bias")
    return y if bias is None else y + bias


def _matmul(a: Args) -> np.ndarray:
    x, y = a["x"], a["y"]
    if a.flag("transpose_x", False):
        x = np.swapaxes(x, -1, -2)
    if a.flag("transpose_y", False):
        y = np.swapaxes(y, -1, -2)
    return np.matmul(x, y)


def _sdpa(a: Args) -> np.ndarray:
    q, k, v = a["query"], a["key"], a["value"]
    scores = np.matmul(q, np.swapaxes(k, -1, -2)) / np.float32(math.sqrt(q.shape[-1]))
    mask = a.get("attn_mask")
    if mask is not None:
        scores = np.where(mask, scores, -np.inf) if mask.dtype == np.bool_ else scores + mask
    e = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return np.matmul(e / e.sum(axis=-1, keepdims=True), v)


# ---------------------------------------------------------------- normalization

def _layer_norm(a: Args) -> np.ndarray:
    x = a["x"]
    axes = tuple(a.ints("axes", list(range(x.ndim))))
    mean = x.mean(axis=axes, keepdims=True)
    centered = x - mean
    var = (centered * centered).mean(axis=axes, keepdims=True)
    y = centered / np.sqrt(var + np.float32(a.get("epsilon", 1e-5)))
    gamma, beta = a.get("gamma"), a.get("beta")
    y = y if gamma is None else y * gamma
    return y if beta is None else y + beta


def _channel_param(value: np.ndarray, rank: int) -> np.ndarray:
    """A per-channel [C] vector shaped to broadcast over axis 1 of a rank-`rank` tensor."""
    return np.reshape(value, (1, -1) + (1,) * (rank - 2))


def _batch_norm(a: Args) -> np.ndarray:
    x = a["x"]
    mean, var = _channel_param(a["mean"], x.ndim), _channel_param(a["variance"], x.ndim)
    y = (x - mean) / np.sqrt(var + np.float32(a.get("epsilon", 1e-5)))
    gamma, beta = a.get("gamma"), a.get("beta")
    y = y if gamma is None else y * _channel_param(gamma, x.ndim)
    return y if beta is None else y + _channel_param(beta, x.ndim)


def _instance_norm(a: Args) -> np.ndarray:
    x = a["x"]
    axes = tuple(range(2, x.ndim))
    centered = x - x.mean(axis=axes, keepdims=True)
    y = centered / np.sqrt((centered * centered).mean(axis=axes, keepdims=True) + np.float32(a.get("epsilon", 1e-5)))
    gamma, beta = a.get("gamma"), a.get("beta")
    y = y if gamma is None else y * _channel_param(gamma, x.ndim)
    return y if beta is None else y + _channel_param(beta, x.ndim)


# ---------------------------------------------------------------- convolution and pooling

def _explicit_pad(a: Args, x_shape, kernel, strides, dilations) -> list[tuple[int, int]]:
    """(begin, end) padding per spatial dim for MIL pad_type valid / custom / same / same_lower."""
    spatial = len(kernel)
    pad_type = str(a.get("pad_type", "valid"))
    if pad_type == "custom":
        pad = a.ints("pad", [0] * 2 * spatial)
        return [(pad[2 * i], pad[2 * i + 1]) for i in range(spatial)]
    if pad_type == "valid":
        return [(0, 0)] * spatial
    if pad_type not in ("same", "same_lower"):
        raise ArtifactError(f"op {a.op.name}: unknown pad_type '{pad_type}'")
    pads = []
    for size, k, s, d in zip(x_shape[2:], kernel, strides, dilations):
        total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
        small, large = total // 2, total - total // 2
        pads.append((small, large) if pad_type == "same" else (large, small))
    return pads


def _torch_pad(pads: list[tuple[int, int]]) -> list[int]:
    """Per-dim (begin, end) pairs, first spatial dim first -> torch.nn.functional.pad order."""
    return [p for pair in reversed(pads) for p in pair]


def _conv(a: Args) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    x, weight = a["x"], a["weight"]
    spatial = x.ndim - 2
    strides = a.ints("strides", [1] * spatial)
    dilations = a.ints("dilations", [1] * spatial)
    pads = _explicit_pad(a, x.shape, weight.shape[2:], strides, dilations)
    xt = F.pad(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), _torch_pad(pads))
    bias = a.get("bias")
    conv = (F.conv1d, F.conv2d, F.conv3d)[spatial - 1]
    with torch.no_grad():
        y = conv(xt, torch.from_numpy(np.ascontiguousarray(weight, dtype=np.float32)),
                 None if bias is None else torch.from_numpy(np.ascontiguousarray(bias, dtype=np.float32)),
                 stride=strides, dilation=dilations, groups=a.int("groups", 1))
    return y.numpy()


def _pool(a: Args, reduce: str) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    x = a["x"]
    kernel = a.ints("kernel_sizes")
    strides = a.ints("strides", [1] * len(kernel))
    pads = _explicit_pad(a, x.shape, kernel, strides, [1] * len(kernel))
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    ceil_mode = a.flag("ceil_mode", False)
    spatial = len(kernel)
    with torch.no_grad():
        if reduce == "max":
            pool = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[spatial - 1]
            return pool(F.pad(xt, _torch_pad(pads), value=-math.inf), kernel, strides, ceil_mode=ceil_mode).numpy()
        pool = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[spatial - 1]
        sums = pool(F.pad(xt, _torch_pad(pads)), kernel, strides, ceil_mode=ceil_mode, count_include_pad=True)
        if not a.flag("exclude_padding_from_average", False):
            return sums.numpy()
        ones = F.pad(torch.ones_like(xt[:1, :1]), _torch_pad(pads))
        return (sums / pool(ones, kernel, strides, ceil_mode=ceil_mode, count_include_pad=True)).numpy()


# ---------------------------------------------------------------- reductions

def _reduce(fn) -> Kernel:
    def kernel(a: Args) -> np.ndarray:
        axes = a.ints("axes")
        return fn(a["x"], axis=None if axes is None else tuple(axes), keepdims=a.flag("keep_dims", False))
    return kernel


def _reduce_arg(fn) -> Kernel:
    def kernel(a: Args) -> np.ndarray:
        axis = a.int("axis", -1)
        y = fn(a["x"], axis=axis)
        return np.expand_dims(y, axis) if a.flag("keep_dims", False) else y
    return kernel


# ---------------------------------------------------------------- shape and data movement

def _reshape(a: Args) -> np.ndarray:
    x = a["x"]
    shape = a.ints("shape")
    if len(shape) == x.ndim:                     # 0 inherits the input's dim when ranks match
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return x.reshape(shape)


def _squeeze(a: Args) -> np.ndarray:
    x = a["x"]
    axes = a.ints("axes")
    return np.squeeze(x) if axes is None else np.squeeze(x, axis=tuple(axes))


def _expand_dims(a: Args) -> np.ndarray:
    x = a["x"]
    out_rank = x.ndim + len(a.ints("axes"))
    axes = sorted(ax % out_rank for ax in a.ints("axes"))
    for ax in axes:
        x = np.expand_dims(x, ax)
    return x


def _concat(a: Args) -> np.ndarray:
    values, axis = a.all("values"), a.int("axis")
    if not a.flag("interleave", False):
        return np.concatenate(values, axis=axis)
    stacked = np.stack(values, axis=axis + 1 if axis >= 0 else axis)
    shape = list(values[0].shape)
    shape[axis] *= len(values)
    return stacked.reshape(shape)


def _split(a: Args) -> tuple[np.ndarray, ...]:
    x, axis = a["x"], a.int("axis")
    sizes = a.ints("split_sizes")
    if sizes is None:
        n = a.int("num_splits")
        sizes = [x.shape[axis] // n] * n
    return tuple(np.split(x, np.cumsum(sizes)[:-1], axis=axis))


def _slice_by_index(a: Args) -> np.ndarray:
    x = a["x"]
    rank = x.ndim
    begin, end = a.ints("begin"), a.ints("end")
    stride = a.ints("stride", [1] * rank)
    begin_mask = a.ints("begin_mask", [0] * rank)
    end_mask = a.ints("end_mask", [0] * rank)
    squeeze_mask = a.ints("squeeze_mask", [0] * rank)
    index = tuple(
        begin[i] if squeeze_mask[i] else
        slice(None if begin_mask[i] else begin[i], None if end_mask[i] else end[i], stride[i])
        for i in range(rank)
    )
    return np.asarray(x[index])


def _slice_by_size(a: Args) -> np.ndarray:
    x = a["x"]
    begin, size = a.ints("begin"), a.ints("size")
    return x[tuple(slice(b, x.shape[i] if s == -1 else b + s) for i, (b, s) in enumerate(zip(begin, size)))]


def _gather(a: Args) -> np.ndarray:
    x, indices = a["x"], np.asarray(a["indices"]).astype(np.int64)
    axis, batch_dims = a.int("axis", 0), a.int("batch_dims", 0)
    axis = axis % x.ndim
    if batch_dims == 0:
        return np.take(x, indices, axis=axis)
    return np.stack([
        _gather_batched(x[i], indices[i], axis - 1, batch_dims - 1) for i in range(x.shape[0])
    ])


def _gather_batched(x: np.ndarray, indices: np.ndarray, axis: int, batch_dims: int) -> np.ndarray:
    if batch_dims == 0:
        return np.take(x, indices, axis=axis)
    return np.stack([_gather_batched(x[i], indices[i], axis - 1, batch_dims - 1) for i in range(x.shape[0])])


def _gather_along_axis(a: Args) -> np.ndarray:
    return np.take_along_axis(a["x"], np.asarray(a["indices"]).astype(np.int64), axis=a.int("axis", 0))


def _pad(a: Args) -> np.ndarray:
    x = a["x"]
    pad = a.ints("pad")
    n = len(pad) // 2
    widths = [(0, 0)] * (x.ndim - n) + [(pad[2 * i], pad[2 * i + 1]) for i in range(n)]
    mode = str(a.get("mode", "constant"))
    if mode == "constant":
        return np.pad(x, widths, mode="constant", constant_values=a.get("constant_val", 0.0))
    return np.pad(x, widths, mode={"reflect": "reflect", "replicate": "edge"}[mode])


def _tile(a: Args) -> np.ndarray:
    return np.tile(a["x"], a.ints("reps"))


def _stack(a: Args) -> np.ndarray:
    return np.stack(a.all("values"), axis=a.int("axis"))


def _pixel_shuffle(a: Args) -> np.ndarray:
    x, r = a["x"], a.int("upscale_factor")
    n, c, h, w = x.shape
    return x.reshape(n, c // (r * r), r, r, h, w).transpose(0, 1, 4, 2, 5, 3).reshape(n, c // (r * r), h * r, w * r)


def _pixel_unshuffle(a: Args) -> np.ndarray:
    x, r = a["x"], a.int("downscale_factor")
    n, c, h, w = x.shape
    return x.reshape(n, c, h // r, r, w // r, r).transpose(0, 1, 3, 5, 2, 4).reshape(n, c * r * r, h // r, w // r)


def _select(a: Args) -> np.ndarray:
    return np.where(a["cond"], a["a"], a["b"])


def _range_1d(a: Args) -> np.ndarray:
    return np.arange(a["start"], a["end"], a["step"])


def _fill(a: Args) -> np.ndarray:
    return np.full(a.ints("shape"), a.get("value", 0.0))


# ---------------------------------------------------------------- resampling

def _linear_sampling(in_size: int, out_size: int, align_corners: bool, half_pixel: bool):
    """Source index pairs and weights for 1-D linear interpolation, as MIL upsample_bilinear defines them."""
    i = np.arange(out_size, dtype=np.float64)
    if align_corners:
        grid = i * ((in_size - 1) / (out_size - 1)) if out_size > 1 else np.zeros(out_size)
    elif half_pixel:
        spacing = in_size / out_size
        grid = (i + 0.5) * spacing - 0.5
    else:
        grid = i * (in_size / out_size)
    grid = np.clip(grid, 0, in_size - 1)
    low = np.floor(grid).astype(np.int64)
    high = np.minimum(low + 1, in_size - 1)
    return low, high, (grid - low).astype(np.float32)


def _interpolate(x: np.ndarray, axis: int, sampling) -> np.ndarray:
    low, high, frac = sampling
    shape = [1] * x.ndim
    shape[axis] = -1
    frac = frac.reshape(shape)
    lo, hi = np.take(x, low, axis=axis), np.take(x, high, axis=axis)
    return lo + (hi - lo) * frac


def _bilinear(x: np.ndarray, out_h: int, out_w: int, align_corners: bool, half_pixel: bool) -> np.ndarray:
    x = _interpolate(x, -2, _linear_sampling(x.shape[-2], out_h, align_corners, half_pixel))
    return _interpolate(x, -1, _linear_sampling(x.shape[-1], out_w, align_corners, half_pixel))


def _upsample_bilinear(a: Args) -> np.ndarray:
    x = a["x"]
    align = a.flag("align_corners", True)
    half_pixel = a.flag("half_pixel_centers", not align)
    out_h = int(math.floor(x.shape[-2] * float(a.get("scale_factor_height", 1.0))))
    out_w = int(math.floor(x.shape[-1] * float(a.get("scale_factor_width", 1.0))))
    return _bilinear(x, out_h, out_w, align, half_pixel)


RESIZE_BILINEAR_MODES = {                     # sampling_mode -> (align_corners, half_pixel)
    "STRICT_ALIGN_CORNERS": (True, False),
    "ALIGN_CORNERS": (True, False),
    "DEFAULT": (False, False),
    "UNALIGN_CORNERS": (False, True),
}


def _resize_bilinear(a: Args) -> np.ndarray:
    mode = str(a.get("sampling_mode", "DEFAULT"))
    if mode not in RESIZE_BILINEAR_MODES:
        raise ArtifactError(f"op {a.op.name}: resize_bilinear sampling_mode '{mode}' is not implemented")
    x = a["x"]
    return _bilinear(x, a.int("target_size_height", 1), a.int("target_size_width", 1), *RESIZE_BILINEAR_MODES[mode])


def _nearest(x: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    rows = np.minimum(np.floor(np.arange(out_h) * (x.shape[-2] / out_h)).astype(np.int64), x.shape[-2] - 1)
    cols = np.minimum(np.floor(np.arange(out_w) * (x.shape[-1] / out_w)).astype(np.int64), x.shape[-1] - 1)
    return np.take(np.take(x, rows, axis=-2), cols, axis=-1)


def _upsample_nearest(a: Args) -> np.ndarray:
    x = a["x"]
    out_h = int(math.floor(x.shape[-2] * float(a.get("scale_factor_height", 1.0))))
    out_w = int(math.floor(x.shape[-1] * float(a.get("scale_factor_width", 1.0))))
    return _nearest(x, out_h, out_w)


# ---------------------------------------------------------------- quantization and compressed constants

def per_axis(param: np.ndarray, rank: int, axis: int | None) -> np.ndarray:
    """A scalar or [D] quantization parameter shaped to broadcast along `axis` of a rank-`rank` tensor."""
    param = np.asarray(param)
    if param.ndim == rank or param.ndim == 0:
        return param
    shape = [1] * rank
    shape[axis % rank] = -1
    return param.reshape(shape)


def _quantize(a: Args) -> np.ndarray:
    x = a["input"]
    axis = a.int("axis")
    scale = per_axis(a["scale"], x.ndim, axis).astype(np.float32)
    zero_point = per_axis(a.get("zero_point", 0), x.ndim, axis).astype(np.float32)
    dtype = NUMPY_BY_NAME[str(a["output_dtype"])]
    info = np.iinfo(dtype)
    return np.clip(np.rint(x / scale) + zero_point, info.min, info.max).astype(dtype)


def _dequantize(a: Args) -> np.ndarray:
    q = np.asarray(a["input"])
    axis = a.int("axis")
    scale = per_axis(a["scale"], q.ndim, axis).astype(np.float32)
    zero_point = per_axis(a.get("zero_point", 0), q.ndim, axis).astype(np.float32)
    return (q.astype(np.float32) - zero_point) * scale


def _affine_dequantize(a: Args) -> np.ndarray:
    q = np.asarray(a["quantized_data"])
    axis = a.int("axis", 0)
    scale = per_axis(a["scale"], q.ndim, axis).astype(np.float32)
    zero_point = per_axis(a["zero_point"], q.ndim, axis).astype(np.float32)
    return (q.astype(np.float32) - zero_point) * scale


def repeat_blocks(param: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Expand a per-block parameter (one value per block along each dim) to the full data shape."""
    for axis, size in enumerate(shape):
        if param.shape[axis] != size:
            param = np.repeat(param, size // param.shape[axis], axis=axis)
    return param


def _blockwise_shift_scale(a: Args) -> np.ndarray:
    data = np.asarray(a["data"]).astype(np.float32)
    scale = repeat_blocks(np.asarray(a["scale"], dtype=np.float32), data.shape)
    offset = a.get("offset")
    if offset is not None:
        data = data - repeat_blocks(np.asarray(offset).astype(np.float32), data.shape)
    return data * scale


def _lut_to_dense(a: Args) -> np.ndarray:
    """iOS 16 form (flat packed indices + `shape`) or iOS 18 form (shaped indices, grouped LUTs)."""
    return _lut_to_dense_ios16(a) if "shape" in a else _lut_to_dense_ios18(a)


def _lut_to_dense_ios16(a: Args) -> np.ndarray:
    from .blob import unpack_bits

    lut, shape = np.asarray(a["lut"]), a.ints("shape")
    nbits = int(round(math.log2(lut.size)))
    indices = unpack_bits(np.asarray(a["indices"], dtype=np.uint8), nbits, int(np.prod(shape)), signed=False)
    return lut[indices.astype(np.int64)].reshape(shape)


def _lut_to_dense_ios18(a: Args) -> np.ndarray:
    indices, lut = np.asarray(a["indices"]).astype(np.int64), np.asarray(a["lut"])
    vector_size = lut.shape[-1]
    vector_axis = a.int("vector_axis")
    if vector_size > 1:
        vector_axis %= indices.ndim
        indices = np.swapaxes(indices, -1, vector_axis)
        lut = np.swapaxes(lut, -3, vector_axis)
    palettes = repeat_blocks(lut, indices.shape + lut.shape[-2:])        # [*indices.shape, P, V]
    flat = palettes.reshape(-1, lut.shape[-2], vector_size)[np.arange(indices.size), indices.ravel()]
    out = flat.reshape(indices.shape[:-1] + (indices.shape[-1] * vector_size,))
    return np.swapaxes(out, -1, vector_axis) if vector_size > 1 else out


def _sparse_to_dense(a: Args) -> np.ndarray:
    """iOS 16 form (packed uint8 mask + `shape`) or iOS 18 form (uint1 mask tensor)."""
    data = np.asarray(a["nonzero_data"])
    if "shape" in a:
        shape = a.ints("shape")
        mask = np.unpackbits(np.asarray(a["mask"], dtype=np.uint8), bitorder="little")[: int(np.prod(shape))]
        mask = mask.reshape(shape)
    else:
        mask = np.asarray(a["mask"])
    out = np.zeros(mask.shape, dtype=data.dtype)
    out[mask != 0] = data
    return out


def _constexpr_cast(a: Args) -> np.ndarray:
    return np.asarray(a["source_val"]).astype(NUMPY_BY_NAME[str(a["output_dtype"])])


# ---------------------------------------------------------------- classifier

def _classify(a: Args) -> tuple[str, dict]:
    probabilities = np.asarray(a["probabilities"], dtype=np.float64).reshape(-1)
    classes = [c if isinstance(c, str) else int(np.asarray(c)) for c in a["classes"]]
    if len(classes) != probabilities.size:
        raise ArtifactError(f"op {a.op.name}: {len(classes)} class labels for {probabilities.size} probabilities")
    return classes[int(np.argmax(probabilities))], dict(zip(classes, probabilities.tolist()))


# ---------------------------------------------------------------- the registry

OPS: dict[str, Kernel] = {
    # elementwise, binary
    "add": _binary(np.add),
    "sub": _binary(np.subtract),
    "mul": _binary(np.multiply),
    "real_div": _binary(np.divide),
    "pow": _binary(np.power),
    "maximum": _binary(np.maximum),
    "minimum": _binary(np.minimum),
    "floor_div": _binary(np.floor_divide),
    "mod": _binary(np.mod),
    "equal": _binary(np.equal),
    "not_equal": _binary(np.not_equal),
    "less": _binary(np.less),
    "less_equal": _binary(np.less_equal),
    "greater": _binary(np.greater),
    "greater_equal": _binary(np.greater_equal),
    "logical_and": _binary(np.logical_and),
    "logical_or": _binary(np.logical_or),
    "logical_xor": _binary(np.logical_xor),
    # elementwise, unary
    "logical_not": _unary(np.logical_not),
    "abs": _unary(np.abs),
    "exp": _unary(np.exp),
    "sqrt": _unary(np.sqrt),
    "square": _unary(np.square),
    "tanh": _unary(np.tanh),
    "floor": _unary(np.floor),
    "ceil": _unary(np.ceil),
    "round": _unary(np.rint),
    "sign": _unary(np.sign),
    "sin": _unary(np.sin),
    "cos": _unary(np.cos),
    "erf": _unary(_erf),
    "sigmoid": _unary(_sigmoid),
    "log": lambda a: np.log(a["x"] + np.float32(a.get("epsilon", 1e-45))),
    "rsqrt": lambda a: 1.0 / np.sqrt(a["x"] + np.float32(a.get("epsilon", 1e-12))),
    "inverse": lambda a: 1.0 / (a["x"] + np.float32(a.get("epsilon", 1e-4))),
    "relu": _relu,
    "relu6": lambda a: np.clip(a["x"], 0, 6),
    "leaky_relu": lambda a: np.where(a["x"] >= 0, a["x"], a["x"] * np.float32(a.get("alpha", 0.01))),
    "sigmoid_hard": lambda a: np.clip(a["x"] * np.float32(a.get("alpha", 0.2)) + np.float32(a.get("beta", 0.5)), 0, 1),
    "softplus": _unary(lambda x: np.logaddexp(0, x)),
    "silu": _silu,
    "gelu": _gelu,
    "softmax": _softmax,
    "clip": _clip,
    "cast": _cast,
    "identity": _unary(lambda x: x),
    "select": _select,
    # linear algebra and attention
    "linear": _linear,
    "matmul": _matmul,
    "scaled_dot_product_attention": _sdpa,
    # normalization
    "layer_norm": _layer_norm,
    "batch_norm": _batch_norm,
    "instance_norm": _instance_norm,
    # convolution and pooling
    "conv": _conv,
    "avg_pool": lambda a: _pool(a, "avg"),
    "max_pool": lambda a: _pool(a, "max"),
    # reductions
    "reduce_mean": _reduce(np.mean),
    "reduce_sum": _reduce(np.sum),
    "reduce_max": _reduce(np.max),
    "reduce_min": _reduce(np.min),
    "reduce_prod": _reduce(np.prod),
    "reduce_argmax": _reduce_arg(np.argmax),
    "reduce_argmin": _reduce_arg(np.argmin),
    # shape and data movement
    "reshape": _reshape,
    "squeeze": _squeeze,
    "expand_dims": _expand_dims,
    "transpose": lambda a: np.transpose(a["x"], a.ints("perm")),
    "concat": _concat,
    "stack": _stack,
    "split": _split,
    "slice_by_index": _slice_by_index,
    "slice_by_size": _slice_by_size,
    "gather": _gather,
    "gather_along_axis": _gather_along_axis,
    "pad": _pad,
    "tile": _tile,
    "shape": lambda a: np.asarray(np.shape(a["x"]), dtype=np.int32),
    "fill": _fill,
    "range_1d": _range_1d,
    "pixel_shuffle": _pixel_shuffle,
    "pixel_unshuffle": _pixel_unshuffle,
    # resampling
    "upsample_bilinear": _upsample_bilinear,
    "resize_bilinear": _resize_bilinear,
    "upsample_nearest_neighbor": _upsample_nearest,
    # activation quantization (W8A8) and compressed constants
    "quantize": _quantize,
    "dequantize": _dequantize,
    "constexpr_affine_dequantize": _affine_dequantize,
    "constexpr_blockwise_shift_scale": _blockwise_shift_scale,
    "constexpr_lut_to_dense": _lut_to_dense,
    "constexpr_sparse_to_dense": _sparse_to_dense,
    "constexpr_cast": _constexpr_cast,
    # classifier head added by ct.ClassifierConfig
    "classify": _classify,
}
