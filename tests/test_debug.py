"""`debug`: the alignment rules on made-up graphs, and the real thing on exported files with one weight
scaled by 1.5 *in the file* (the PyTorch model is untouched): the first divergence names that module."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from mobilevit_deploy.debug.align import (MATCHED, NAME, UNMAPPED, ArtifactTensor, ModuleOutput, align, counts, fit,
                                          onnx_scope, tflite_scope)

# A conv in a middle MobileViT stage; one attention projection of a middle Swin block.
FAULTS = {"mobilevit_xxs": "stages.2.1.conv_kxk.conv", "swin_micro": "layers.1.blocks.0.attn.proj"}
CASES = [("mobilevit_xxs", "onnx"), ("mobilevit_xxs", "tflite"), ("swin_micro", "onnx"), ("swin_micro", "tflite"),
         ("mobilevit_xxs", "coreml"), pytest.param("swin_micro", "coreml", marks=pytest.mark.slow),
         ("mobilevit_xxs", "executorch")]
# The share of modules a file's tensors map to. ExecuTorch: XNNPACK's values carry no module names, so only
# leaves are matched by op kind (convolutions, linears, softmax), and LayerNorm runs outside the delegate.
MAPPED_SHARE = {"executorch": 0.45}


# -- the rules, on names and shapes alone -------------------------------------------------------

def test_onnx_scope_rebuilds_qualified_names():
    modules = {"stages", "stages.2", "stages.2.1", "stages.2.1.conv_kxk", "stages.2.1.conv_kxk.act",
               "layers", "layers.0", "layers.0.blocks", "layers.0.blocks.0", "layers.0.blocks.0.norm1"}
    assert onnx_scope("/stages/stages.2/stages.2.1/conv_kxk/act/Mul", modules) == "stages.2.1.conv_kxk.act"
    assert onnx_scope("/layers/layers.0/blocks/blocks.0/norm1/LayerNormalization", modules) == "layers.0.blocks.0.norm1"
    assert onnx_scope("/stages/stages.9/Add", modules) is None          # no such module: no name
    assert onnx_scope("Constant_537", modules) is None


def test_tflite_scope_reads_class_attribute_segments():
    modules = {"stages", "stages.2", "stages.2.1", "stages.2.1.conv_kxk", "stages.2.1.conv_kxk.conv"}
    name = ("pkg.MobileViT/torch.nn.modules.container.Sequential_stages/torch.nn.modules.container.Sequential_2/"
            "pkg.MobileViTBlock_1/pkg.layers.FusedConvAct_conv_kxk/torch.nn.modules.conv.Conv2d_conv;2")
    assert tflite_scope(name, modules) == "stages.2.1.conv_kxk.conv"
    assert tflite_scope(name + ";;pkg.MobileViT/torch.nn.modules.container.Sequential_stages", modules) == \
        "stages.2.1.conv_kxk.conv"                                       # the first location is the value's
    assert tflite_scope("arith.constant21", modules) is None
    assert tflite_scope("serving_default_args_0", modules) is None


def test_fit_same_nhwc_reshape():
    assert fit((1, 8, 8, 48), (1, 8, 8, 48)) == "same"
    assert fit((1, 8, 8, 48), (1, 48, 8, 8)) == "nhwc"
    assert fit((1, 32, 32, 32), (1, 32, 32, 32)) == "same"
    assert fit((1, 32, 32, 32), (1, 32, 32, 32), nhwc_first=True) == "nhwc"
    assert fit((64, 96), (1, 64, 96)) == "reshape"
    assert fit((196, 96), (4, 49, 96)) is None                           # merged axes only with the op kind
    assert fit((196, 96), (4, 49, 96), merged_axes=True) == "reshape"
    assert fit((4, 49, 4, 24), (4, 49, 96)) is None


def _module(name, kind, order, shape, leaf=True, same_as=None):
    return ModuleOutput(name, kind, order, shape, leaf, same_as)


def test_align_by_name_then_by_op_kind_then_unmapped():
    modules = [_module("a.conv", "Conv2d", 0, (1, 4, 2, 2)),
               _module("a.act", "Identity", 1, (1, 4, 2, 2), same_as="a.conv"),
               _module("a", "Block", 2, (1, 4, 2, 2), leaf=False),
               _module("b.fc", "Linear", 3, (1, 3)),
               _module("b.norm", "LayerNorm", 4, (1, 3)),
               _module("c.fc", "Linear", 5, (1, 5))]
    tensors = [ArtifactTensor("t0", "t0", 0, (1, 2, 2, 4), "a.conv", "CONV_2D"),
               ArtifactTensor("t1", "t1", 1, (1, 2, 2, 4), "a", "ADD"),
               ArtifactTensor("t2", "t2", 2, (1, 3), None, "FULLY_CONNECTED"),
               ArtifactTensor("t3", "t3", 3, (1, 5), "c.fc", "FULLY_CONNECTED")]
    mappings = {m.module: m for m in align(modules, tensors)}
    assert (mappings["a.conv"].method, mappings["a.conv"].tensor.key, mappings["a.conv"].layout) == (NAME, "t0", "nhwc")
    assert (mappings["a"].method, mappings["a"].tensor.key) == (NAME, "t1")
    assert (mappings["a.act"].method, mappings["a.act"].tensor.key) == (MATCHED, "t0")   # it returns the conv's tensor
    assert (mappings["b.fc"].method, mappings["b.fc"].tensor.key) == (MATCHED, "t2")
    assert mappings["b.norm"].method == UNMAPPED                        # no op kind, no name: never guessed
    assert counts(list(mappings.values())) == {NAME: 3, MATCHED: 2, UNMAPPED: 1}


def test_align_leaf_matching_never_takes_a_later_named_modules_op():
    modules = [_module("x.fc", "Linear", 0, (1, 3)), _module("y.fc", "Linear", 1, (1, 3))]
    tensors = [ArtifactTensor("t0", "t0", 0, (1, 3), "y.fc", "FULLY_CONNECTED")]
    mappings = {m.module: m for m in align(modules, tensors)}
    assert mappings["x.fc"].method == UNMAPPED and mappings["y.fc"].method == NAME


def test_a_value_kept_inside_its_module_is_not_its_output():
    """A LayerNorm whose scale the converter folded into the next op has no output in the file."""
    modules = [_module("n", "LayerNorm", 0, (1, 8))]
    inner = ArtifactTensor(0, "n", 0, (1, 8), "n", "MUL", frozenset({"n"}))
    assert align(modules, [inner])[0].method == UNMAPPED
    leaving = ArtifactTensor(0, "n", 0, (1, 8), "n", "ADD", frozenset({"m"}))
    assert align(modules, [leaving])[0].method == NAME


def test_a_value_the_engine_cannot_hand_out_keeps_matching_in_order():
    """An XNNPACK delegate's own output (key None: computed, not fetchable) takes its module's place, so the
    next module of the same kind is not shifted onto it; without it (the negative control) a.fc would take
    b.fc's tensor, as swin_micro's PatchMerging reductions once did in its ExecuTorch file."""
    modules = [_module("a.fc", "Linear", 0, (1, 3)), _module("b.fc", "Linear", 1, (1, 3))]
    tensors = [ArtifactTensor(None, "out", 0, (1, 3), None, "XNNFullyConnected"),
               ArtifactTensor(5, "t1", 1, (1, 3), None, "XNNFullyConnected")]
    mappings = {m.module: m for m in align(modules, tensors)}
    assert mappings["a.fc"].tensor.key is None and mappings["b.fc"].tensor.key == 5
    assert {m.module: m for m in align(modules, tensors[1:])}["a.fc"].tensor.key == 5


# -- real files ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def prepared():
    from mobilevit_deploy.pipeline import prepare_model

    return {name: prepare_model(name) for name in FAULTS}


@pytest.fixture(scope="module")
def exported(model_file):
    """One file per (model, target, precision), from the shared conversions (conftest: the matrix's own)."""
    from mobilevit_deploy.spec import Precision

    def get(model: str, target: str, precision: Precision = Precision.fp32) -> Path:
        return model_file(model, target, precision).path

    return get


def _weight_layouts(weight: np.ndarray) -> list[np.ndarray]:
    """How a converter may store a PyTorch weight: as is, transposed (ONNX MatMul), OHWI (TFLite conv)."""
    layouts = [weight]
    if weight.ndim == 2:
        layouts.append(weight.T)
    if weight.ndim == 4:
        layouts += [weight.transpose(0, 2, 3, 1), weight.transpose(1, 2, 3, 0)]
    return [np.ascontiguousarray(w, dtype="<f4") for w in layouts]


def scale_weight_in_file(path: Path, weight: np.ndarray, factor: float = 1.5) -> None:
    """Scale one weight tensor inside an exported file, found by its exact float32 bytes (it must
    occur once). Works on a .onnx initializer, a .tflite buffer, a Core ML weight.bin and a .pte's
    named data (XNNPACK's weights) alike."""
    data = bytearray(path.read_bytes())
    for layout in _weight_layouts(weight):
        needle = layout.tobytes()
        start = data.find(needle)
        if start >= 0:
            assert data.find(needle, start + 1) < 0, "the weight's bytes occur twice: ambiguous"
            data[start:start + len(needle)] = (layout * np.float32(factor)).astype("<f4").tobytes()
            path.write_bytes(bytes(data))
            return
    raise AssertionError(f"weight {weight.shape} not found in {path}")


def faulty_copy(artifact: Path, weight: np.ndarray, where: Path) -> Path:
    where.mkdir(parents=True, exist_ok=True)
    copy = where / artifact.name
    if artifact.is_dir():
        shutil.copytree(artifact, copy)
        scale_weight_in_file(next(copy.rglob("weight.bin")), weight)
    else:
        shutil.copy(artifact, copy)
        scale_weight_in_file(copy, weight)
    return copy


@pytest.mark.parametrize("model,target", CASES, ids=lambda v: v)
def test_debug_names_the_module_whose_weight_was_changed_in_the_file(model, target, prepared, exported, tmp_path):
    from mobilevit_deploy.debug.run import debug_file
    from mobilevit_deploy.fusion import fuse

    artifact = exported(model, target)
    clean = debug_file(artifact, model, write_files=False)
    assert clean.first_divergence is None, [(l.module, l.failures) for l in clean.layers if l.failures][:3]
    assert clean.mapped["name"] + clean.mapped["matched"] > MAPPED_SHARE.get(target, 0.8) * sum(clean.mapped.values())

    module = FAULTS[model]
    weight = fuse(prepared[model].model).model.get_submodule(module).weight.detach().numpy()
    broken = debug_file(faulty_copy(artifact, weight, tmp_path / "faulty"), model)
    parent = module.rsplit(".", 1)[0]
    assert broken.first_divergence in (module, parent), broken.first_divergence

    record = json.loads((tmp_path / "faulty" / (artifact.name + ".debug.json")).read_text())
    assert record["first_divergence"] == broken.first_divergence
    assert set(record["mapped"]) == {"name", "matched", "unmapped"}
    first = next(l for l in record["layers"] if l["module"] == broken.first_divergence)
    assert first["failures"] and first["method"] in ("name", "matched")
    page = (tmp_path / "faulty" / (artifact.name + ".debug.html")).read_text()
    assert "data:image/png;base64," in page and "http" not in page.replace("http-equiv", "")


@pytest.mark.parametrize("model", ["mobilevit_xxs", pytest.param("swin_micro", marks=pytest.mark.slow)])
def test_int8_ranking_names_the_layers_that_add_the_noise(model, exported):
    """On an int8 TFLite file the ranking is by relative noise power each layer adds; the same ranking on
    the fp32 file is the negative control (float rounding only: nothing to rank)."""
    from mobilevit_deploy.debug.run import debug_file
    from mobilevit_deploy.spec import Precision

    int8 = debug_file(exported(model, "tflite", Precision.int8), model, write_files=False)
    fp32 = debug_file(exported(model, "tflite"), model, write_files=False)
    top = int8.ranking(5)
    noise = [layer.noise_added for layer in top]
    assert len(top) == 5 and noise == sorted(noise, reverse=True)
    assert noise[0] > 3e-3 and max(layer.noise_added for layer in fp32.layers) < 1e-9
    # the top layers carry a real share of the noise that reaches the logits
    logits_noise = 10 ** (-int8.layers[-1].metrics.sqnr_db / 10)
    assert sum(noise) > 0.2 * logits_noise, (noise, logits_noise)
    assert {layer.module for layer in top} <= {layer.module for layer in int8.layers}
    assert int8.to_dict()["noise_ranking"][0]["module"] == top[0].module


def test_debug_of_a_missing_file_is_one_line(tmp_path):
    from mobilevit_deploy.debug.run import debug_file
    from mobilevit_deploy.errors import ArtifactError

    with pytest.raises(ArtifactError, match="does not exist"):
        debug_file(tmp_path / "nothing.onnx", "mobilevit_xxs")
