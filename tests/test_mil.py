"""The MIL reference interpreter: it reads the saved .mlpackage back and computes what PyTorch computes.

Packages are made here with coremltools directly (not through the target), so these tests pin the
interpreter itself: blob format, decompression against coremltools' own decompressor, kernels
against torch, the power of the check (one broken kernel moves the error by orders of magnitude),
and the refusals (unknown op, damaged blob).
"""
from __future__ import annotations

import shutil
import struct

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

ct = pytest.importorskip("coremltools", reason="coremltools is not installed")

from mobilevit_deploy.errors import ArtifactError  # noqa: E402
from mobilevit_deploy.mil import OPS, Interpreter, load_program  # noqa: E402
from mobilevit_deploy.mil.blob import BlobFile, unpack_bits  # noqa: E402
from mobilevit_deploy.mil.ops import Args  # noqa: E402
from mobilevit_deploy.mil.program import Op  # noqa: E402

from toys import SIZE, ToyNet, convert, reference, toy_images, toy_net  # noqa: E402,F401


def interpret(path, x: np.ndarray, ops=None) -> np.ndarray:
    interpreter = Interpreter.from_package(path, ops)
    return np.concatenate([interpreter.run({"image": x[i:i + 1]})["logits"] for i in range(len(x))])


def max_rel(ref: np.ndarray, out: np.ndarray) -> float:
    return float(np.abs(out - ref).max() / np.abs(ref).max())


@pytest.fixture(scope="module")
def toy():
    return toy_net()


@pytest.fixture(scope="module")
def packages(toy, tmp_path_factory):
    """fp32 and fp16 toy packages, converted once for the module."""
    root = tmp_path_factory.mktemp("mil")
    made = {}
    for name, ios, fp16 in [("fp32", 17, False), ("fp16", 17, True), ("fp16-ios16", 16, True), ("fp16-ios18", 18, True)]:
        made[name] = convert(toy, root / f"{name}.mlpackage", ios, fp16), root / f"{name}.mlpackage"
    return made


# ---------------------------------------------------------------- parity with PyTorch

@pytest.mark.parametrize("name, bound", [("fp32", 1e-5), ("fp16", 1e-2), ("fp16-ios16", 1e-2), ("fp16-ios18", 1e-2)])
def test_interpreter_matches_pytorch(name, bound, toy, packages):
    x = toy_images()
    ref = reference(toy, x)
    assert max_rel(ref, interpret(packages[name][1], x)) < bound


def test_fp16_program_really_runs_in_fp16(toy, packages):
    """An fp16 package must not be checked as if it were fp32: its error sits at fp16's level."""
    x = toy_images(1)
    ref = reference(toy, x)
    err32 = max_rel(ref, interpret(packages["fp32"][1], x))
    err16 = max_rel(ref, interpret(packages["fp16"][1], x))
    assert err16 > 100 * err32
    interpreter = Interpreter.from_package(packages["fp16"][1])
    kept = interpreter.run({"image": x}, keep="all")
    fp16 = [name for name, value in kept.items() if interpreter.types[name].dtype == "fp16"]
    assert len(fp16) > 10
    for name in fp16:                                               # every fp16 result is an fp16 value
        assert np.array_equal(kept[name], kept[name].astype(np.float16).astype(np.float32)), name


# ---------------------------------------------------------------- the check has power

def _relu_for_silu(a: Args):
    return np.maximum(a["x"], 0)


def _nearest_for_bilinear(a: Args):
    x = a["x"]
    return x.repeat(int(a["scale_factor_height"]), axis=-2).repeat(int(a["scale_factor_width"]), axis=-1)


def _layer_norm_eps(a: Args):
    values = dict(a.values)
    values["epsilon"] = [np.float32(1e-2)]
    return OPS["layer_norm"](Args(a.op, values))


@pytest.mark.parametrize("op_type, broken", [
    ("silu", _relu_for_silu),
    ("upsample_bilinear", _nearest_for_bilinear),
    ("layer_norm", _layer_norm_eps),
], ids=["silu-as-relu", "bilinear-as-nearest", "layer-norm-eps-1e-2"])
def test_one_broken_kernel_moves_the_error_by_orders_of_magnitude(op_type, broken, toy, packages):
    x = toy_images(1)
    ref = reference(toy, x)
    good = max_rel(ref, interpret(packages["fp32"][1], x))
    bad = max_rel(ref, interpret(packages["fp32"][1], x, ops={**OPS, op_type: broken}))
    assert good < 1e-5
    assert bad > 1000 * good, (good, bad)


# ---------------------------------------------------------------- what the interpreter refuses

def test_unknown_op_fails_naming_it_before_anything_runs(tmp_path):
    from coremltools.converters.mil import Builder as mb

    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 4))], opset_version=ct.target.iOS17)
    def prog(x):
        return mb.relu(x=mb.cumsum(x=x, axis=1))

    path = tmp_path / "cumsum.mlpackage"
    ct.convert(prog, convert_to="mlprogram", minimum_deployment_target=ct.target.iOS17).save(str(path))
    calls = []
    spy = {**OPS, "relu": lambda a: calls.append(a.op.name) or np.maximum(a["x"], 0)}
    with pytest.raises(ArtifactError, match="cumsum"):
        Interpreter.from_package(path, spy)
    assert calls == []


def _largest_blob(data: bytes) -> tuple[int, int]:
    """(size, data offset) of the largest blob, walking the 64-byte-aligned metadata records."""
    count, _ = struct.unpack_from("<II", data, 0)
    records, at = [], 64
    for _ in range(count):
        _, _, size, offset, _ = struct.unpack_from("<IIQQQ", data, at)
        records.append((size, offset))
        at = -(-(offset + size) // 64) * 64
    return max(records)


def test_tampered_weights_change_the_result(toy, packages, tmp_path):
    """There is no checksum in a weight blob: flipped weight bytes are caught by parity, so the
    interpreter must really read the weights from the saved file."""
    x = toy_images(1)
    ref = reference(toy, x)
    tampered = tmp_path / "tampered.mlpackage"
    shutil.copytree(packages["fp32"][1], tampered)
    blob = tampered / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"
    data = bytearray(blob.read_bytes())
    size, offset = _largest_blob(data)
    data[offset:offset + size] = np.frombuffer(bytes(data[offset:offset + size]), np.float32)[::-1].tobytes()
    blob.write_bytes(bytes(data))
    assert max_rel(ref, interpret(tampered, x)) > 1e-2


def test_damaged_blob_metadata_is_an_artifact_error(packages, tmp_path):
    damaged = tmp_path / "damaged.mlpackage"
    shutil.copytree(packages["fp32"][1], damaged)
    blob = damaged / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"
    data = bytearray(blob.read_bytes())
    data[64:68] = b"\0\0\0\0"                         # the first blob's sentinel
    blob.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="sentinel"):
        load_program(damaged)


def test_truncated_blob_is_an_artifact_error(packages, tmp_path):
    truncated = tmp_path / "truncated.mlpackage"
    shutil.copytree(packages["fp32"][1], truncated)
    blob = truncated / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"
    blob.write_bytes(blob.read_bytes()[:-100])
    with pytest.raises(ArtifactError, match="truncated"):
        load_program(truncated)


def test_not_a_package_is_an_artifact_error(tmp_path):
    with pytest.raises(ArtifactError, match="Manifest.json"):
        load_program(tmp_path)


# ---------------------------------------------------------------- intermediate tensors

def test_keep_exposes_intermediate_tensors(packages):
    interpreter = Interpreter.from_package(packages["fp32"][1])
    x = toy_images(1)
    everything = interpreter.run({"image": x}, keep="all")
    assert len(everything) > 20 and "logits" in everything
    silu = [op.outputs[0].name for op in interpreter.program.ops if op.type == "silu"]
    picked = interpreter.run({"image": x}, keep={silu[0]})
    assert set(picked) == {silu[0], "logits"}
    assert np.array_equal(picked[silu[0]], everything[silu[0]])
    assert (picked[silu[0]] >= -0.3).all()                            # silu's minimum is about -0.278
    with pytest.raises(ArtifactError, match="no such tensor"):
        interpreter.run({"image": x}, keep={"not_a_tensor"})


# ---------------------------------------------------------------- blob format and decompression

def test_unpack_bits_by_hand():
    # 4-bit values 1, 2, 15, 0 packed LSB first: 0x21, 0x0F
    assert unpack_bits(np.array([0x21, 0x0F], np.uint8), 4, 4, signed=False).tolist() == [1, 2, 15, 0]
    assert unpack_bits(np.array([0x21, 0x0F], np.uint8), 4, 4, signed=True).tolist() == [1, 2, -1, 0]
    # 6-bit values 63, 1 -> bits 111111 100000 (LSB first) -> bytes 0x7F, 0x00
    assert unpack_bits(np.array([0x7F, 0x00], np.uint8), 6, 2, signed=False).tolist() == [63, 1]


def _compress(kind: str, mlmodel):
    import coremltools.optimize.coreml as cto

    configs = {
        "int8": (cto.linear_quantize_weights, cto.OpLinearQuantizerConfig(
            mode="linear_symmetric", dtype="int8", granularity="per_channel", weight_threshold=100)),
        "int4": (cto.linear_quantize_weights, cto.OpLinearQuantizerConfig(
            mode="linear_symmetric", dtype="int4", granularity="per_block", block_size=8, weight_threshold=100)),
        "palettize6": (cto.palettize_weights, cto.OpPalettizerConfig(nbits=6, weight_threshold=100)),
        "palettize4": (cto.palettize_weights, cto.OpPalettizerConfig(nbits=4, weight_threshold=100)),
        "sparse": (cto.prune_weights, cto.OpMagnitudePrunerConfig(target_sparsity=0.5, weight_threshold=100)),
    }
    compress, config = configs[kind]
    return compress(mlmodel, cto.OptimizationConfig(op_type_configs={"conv": config, "linear": config}))


@pytest.fixture(scope="module")
def bases(toy, tmp_path_factory):
    """Uncompressed MLModels by (ios, fp16), converted on first use."""
    root, made = tmp_path_factory.mktemp("bases"), {}

    def get(ios: int, fp16: bool):
        if (ios, fp16) not in made:
            made[ios, fp16] = convert(toy, root / f"{ios}-{fp16}.mlpackage", ios, fp16)
        return made[ios, fp16]
    return get


@pytest.mark.parametrize("kind, ios", [
    ("int8", 16), ("int8", 18), ("palettize6", 16), ("palettize4", 18), ("int4", 18), ("sparse", 16), ("sparse", 18),
])
def test_decompression_matches_coremltools(kind, ios, bases, tmp_path):
    """Each constexpr op, iOS 16 and iOS 18 forms, against coremltools' own decompressor."""
    fp16 = kind != "sparse"                          # pruning fp16 weights is broken in coremltools 9.0
    compressed = _compress(kind, bases(ios, fp16))
    compressed.save(str(tmp_path / "c.mlpackage"))
    ct.optimize.coreml.decompress_weights(compressed).save(str(tmp_path / "d.mlpackage"))
    constexprs = {op.type for op in load_program(tmp_path / "c.mlpackage").ops if op.type.startswith("constexpr_")}
    assert constexprs, "nothing was compressed"
    assert not any(op.type.startswith("constexpr_") for op in load_program(tmp_path / "d.mlpackage").ops)
    x = toy_images(1)
    ours = interpret(tmp_path / "c.mlpackage", x)
    theirs = interpret(tmp_path / "d.mlpackage", x)
    assert np.array_equal(ours, theirs), np.abs(ours - theirs).max()


def _stored_values(op):
    """Value protos of an op that live in the weight blob: a const's `val`, or inline arguments
    (iOS 18 constexpr ops take their packed data that way)."""
    candidates = list(op.attributes.values())
    candidates += [b.value for arg in op.inputs.values() for b in arg.arguments if b.WhichOneof("binding") == "value"]
    return [v for v in candidates if v.WhichOneof("value") == "blobFileValue"]


def test_blob_reader_matches_coremltools_reader(bases, tmp_path):
    """Our parser of weight.bin against coremltools' native BlobReader, for fp16, int4 and uint6 blobs."""
    reader_module = pytest.importorskip("coremltools.libmilstoragepython")
    base = bases(18, True)
    base.save(str(tmp_path / "base.mlpackage"))
    _compress("int4", base).save(str(tmp_path / "int4.mlpackage"))
    _compress("palettize6", base).save(str(tmp_path / "pal6.mlpackage"))
    from mobilevit_deploy.formats.mlpackage import iter_ops, load_proto

    read = {"FLOAT16": "read_fp16_data", "INT4": "read_int4_data", "UINT6": "read_uint6_data"}
    checked = set()
    for package in ("base", "int4", "pal6"):
        path = tmp_path / f"{package}.mlpackage"
        blob_path = path / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"
        ours, theirs = BlobFile(blob_path), reader_module._BlobStorageReader(str(blob_path))
        values = [v for op in iter_ops(load_proto(path)) for v in _stored_values(op)]
        for value in values:
            dtype = ct.proto.MIL_pb2.DataType.Name(value.type.tensorType.dataType)
            if dtype not in read:
                continue
            expected = np.asarray(getattr(theirs, read[dtype])(value.blobFileValue.offset))
            got = ours.read(value.blobFileValue.offset)
            assert np.array_equal(got.view(np.uint16) if dtype == "FLOAT16" else got, expected), (package, dtype)
            checked.add(dtype)
    assert checked == set(read)


# ---------------------------------------------------------------- kernels against torch

def _op(op_type: str) -> Op:
    return Op(op_type, f"test_{op_type}", {}, ())


def _run(op_type: str, **inputs):
    return OPS[op_type](Args(_op(op_type), {k: [v] for k, v in inputs.items()}))


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("scale", [2.0, 3.0])
def test_upsample_bilinear_matches_torch(align_corners, scale):
    x = torch.randn(1, 2, 5, 7, generator=torch.Generator().manual_seed(0))
    expected = F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=align_corners).numpy()
    got = _run("upsample_bilinear", x=x.numpy(), scale_factor_height=np.float32(scale),
               scale_factor_width=np.float32(scale), align_corners=np.bool_(align_corners))
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_conv_custom_and_same_padding_match_torch():
    gen = torch.Generator().manual_seed(0)
    x, w, b = torch.randn(1, 4, 9, 9, generator=gen), torch.randn(8, 2, 3, 3, generator=gen), torch.randn(8, generator=gen)
    expected = F.conv2d(x, w, b, stride=2, padding=1, groups=2).numpy()
    got = _run("conv", x=x.numpy(), weight=w.numpy(), bias=b.numpy(), strides=np.array([2, 2]),
               pad_type="custom", pad=np.array([1, 1, 1, 1]), groups=np.int32(2))
    np.testing.assert_allclose(got, expected, atol=1e-5)
    same = _run("conv", x=x.numpy(), weight=w.numpy(), pad_type="same", groups=np.int32(2))
    np.testing.assert_allclose(same, F.conv2d(x, w, padding="same", groups=2).numpy(), atol=1e-5)


def test_slice_by_index_masks():
    x = np.arange(24).reshape(2, 3, 4)
    got = _run("slice_by_index", x=x, begin=np.array([1, 0, 1]), end=np.array([2, 0, 3]),
               begin_mask=np.array([0, 1, 0]), end_mask=np.array([0, 1, 0]), squeeze_mask=np.array([1, 0, 0]))
    assert got.tolist() == x[1, :, 1:3].tolist()


def test_gather_with_batch_dims():
    x = np.arange(24).reshape(2, 3, 4)
    indices = np.array([[0, 2], [1, 1]])
    got = _run("gather", x=x, indices=indices, axis=np.int32(1), batch_dims=np.int32(1))
    assert got.tolist() == [x[0, [0, 2]].tolist(), x[1, [1, 1]].tolist()]


def test_layer_norm_and_sdpa_match_torch():
    gen = torch.Generator().manual_seed(0)
    x, g, b = torch.randn(2, 5, 8, generator=gen), torch.randn(8, generator=gen), torch.randn(8, generator=gen)
    got = _run("layer_norm", x=x.numpy(), axes=np.array([-1]), gamma=g.numpy(), beta=b.numpy(), epsilon=np.float32(1e-5))
    np.testing.assert_allclose(got, F.layer_norm(x, (8,), g, b, 1e-5).numpy(), atol=1e-5)
    q, k, v = (torch.randn(1, 2, 6, 4, generator=gen) for _ in range(3))
    mask = torch.rand(6, 6, generator=gen) > 0.3
    mask.fill_diagonal_(True)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask).numpy()
    got = _run("scaled_dot_product_attention", query=q.numpy(), key=k.numpy(), value=v.numpy(), attn_mask=mask.numpy())
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_pixel_shuffle_matches_torch():
    x = torch.randn(1, 8, 3, 3, generator=torch.Generator().manual_seed(0))
    got = _run("pixel_shuffle", x=x.numpy(), upscale_factor=np.int32(2))
    np.testing.assert_array_equal(got, F.pixel_shuffle(x, 2).numpy())
    back = _run("pixel_unshuffle", x=got, downscale_factor=np.int32(2))
    np.testing.assert_array_equal(back, x.numpy())
