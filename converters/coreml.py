"""Core ML target: a PyTorch model -> an ML Program `.mlpackage` (a directory).

Precisions:
  fp32, fp16     compute precision of the whole program (inputs and outputs stay float32)
  int8           fp16 program, conv/linear weights int8 linear per-channel
  palettize6/4   fp16 program, conv/linear weights k-means palettized to 6 / 4 bits
  int4           fp16 program, conv/linear weights int4 per-block (iOS 18 only)
  w8a8           experimental: int8 activations (quantize/dequantize pairs) calibrated through the
                 mvdeploy MIL interpreter, plus int8 per-channel weights (iOS 17+)

Only weights are compressed: the configs name the constants feeding the `weight` input of conv and
linear ops, so biases and derived constants (Swin's relative-position bias, masks) stay exact. Tensors under
`weight_threshold` elements (default 2048, coremltools' own default) stay float.

Options (ExportSpec.options):
  ios           16 | 17 | 18 (default 17): minimum deployment target
  image_input   bool: a Core ML image input (RGB, scale 1/255); the per-channel mean/std of
                `preprocess` are applied inside the model so ImageNet's std is exact
  preprocess    spec.Preprocess or {"mean": [...], "std": [...]}; required with image_input
  labels        list[str]: a classifier (ct.ClassifierConfig); softmax is applied in the model so the
                probabilities are probabilities, and the raw logits stay an output
  metadata      dict: author, license, version, short_description go to the model's own fields;
                every other key (weights source, preprocessing, ...) to user_defined_metadata
  weight_threshold  int: smallest weight tensor (elements) that gets compressed
  block_size    int: int4 block size along the input channels (default 32)
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from torch import Tensor, nn

from mobilevit_deploy.errors import (
    ArtifactError, ConversionError, MvDeployError, TargetUnavailableError, UnknownNameError,
)
from mobilevit_deploy.spec import Artifact, ExportSpec, Layout, Precision, Preprocess, TensorSpec

from .base import Calibration, CalibrationRequiredError

IOS_VERSIONS = (16, 17, 18)
INPUT_NAME = "image"
LOGITS = "logits"
PROBABILITIES = "probabilities"
CLASS_LABEL = "classLabel"
STANDARD_METADATA = ("author", "license", "version", "short_description")
META_PREFIX = "mvdeploy."                  # keys mvdeploy itself writes into user_defined_metadata


# ---------------------------------------------------------------- options

@dataclass(frozen=True)
class CoreMLOptions:
    """ExportSpec.options for Core ML, checked once. Unknown keys are an error, not ignored."""

    ios: int = 17
    image_input: bool = False
    preprocess: dict | None = None          # {"mean": [3], "std": [3], ...}
    labels: tuple[str, ...] | None = None
    metadata: dict = field(default_factory=dict)
    weight_threshold: int = 2048
    block_size: int = 32

    @classmethod
    def from_spec(cls, spec: ExportSpec) -> "CoreMLOptions":
        options = dict(spec.options)
        known = set(cls.__dataclass_fields__)
        for key in options:
            if key not in known:
                raise UnknownNameError("coreml option", key, known)
        ios = int(options.get("ios", 17))
        if ios not in IOS_VERSIONS:
            raise ConversionError(f"coreml: --ios {ios} is not supported (choose {', '.join(map(str, IOS_VERSIONS))})")
        preprocess = options.get("preprocess")
        if isinstance(preprocess, Preprocess):
            preprocess = preprocess.to_dict()
        image_input = bool(options.get("image_input", False))
        if image_input and not (preprocess and "mean" in preprocess and "std" in preprocess):
            raise ConversionError(
                "coreml: image_input needs options['preprocess'] with the model's mean and std "
                "(they are applied inside the model)"
            )
        labels = options.get("labels")
        if labels is not None:
            labels = tuple(str(label) for label in labels)
            if not labels:
                raise ConversionError("coreml: labels is an empty list")
        return cls(ios, image_input, preprocess, labels, dict(options.get("metadata") or {}),
                   int(options.get("weight_threshold", 2048)), int(options.get("block_size", 32)))


# ---------------------------------------------------------------- what gets converted

class Normalize(nn.Module):
    """Pixels scaled to [0, 1] by the image input -> (x - mean) / std, per channel, exactly."""

    def __init__(self, mean, std):
        super().__init__()
        import torch

        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:                 # [B, 3, H, W]
        return (x - self.mean) / self.std


class WithProbabilities(nn.Module):
    """logits -> (logits, softmax(logits)): the classifier reads probabilities, parity reads logits."""

    def forward(self, logits: Tensor) -> tuple[Tensor, Tensor]:   # [B, K]
        return logits, logits.softmax(dim=-1)


def deployable(model: nn.Module, options: CoreMLOptions) -> nn.Module:
    """The model with the pieces the options ask for around it, in eval mode."""
    parts = [Normalize(options.preprocess["mean"], options.preprocess["std"])] if options.image_input else []
    parts.append(model)
    parts += [WithProbabilities()] if options.labels else []
    return nn.Sequential(*parts).eval()


def _alias_as_identity() -> None:
    """torch.export leaves `aten.alias` in Swin's graph; coremltools 9.0 has no converter for it."""
    from coremltools.converters.mil.frontend.torch.ops import noop
    from coremltools.converters.mil.frontend.torch.torch_op_registry import _TORCH_OPS_REGISTRY

    if "alias" not in _TORCH_OPS_REGISTRY:
        _TORCH_OPS_REGISTRY.set_func_by_name(noop, "alias")


def _trace(model: nn.Module, example: Tensor):
    import torch

    with torch.no_grad():
        return torch.jit.trace(model, example, check_trace=False)


def _export(model: nn.Module, example: Tensor):
    import torch

    _alias_as_identity()
    return torch.export.export(model, (example,)).run_decompositions({})


CONVERTERS: dict[str, Callable[[nn.Module, Tensor], object]] = {"trace": _trace, "export": _export}


def _add_classifier(program, labels: tuple[str, ...], target):
    """A converted MIL program with (logits, probabilities) outputs -> a classifier MLModel.

    Why two steps: ct.convert with both named outputs and a ClassifierConfig fails in coremltools 9.0
    (the classify op adds outputs the declared output list does not cover: IndexError in
    get_func_output). The first step fixes names and float32 dtypes; this one only adds `classify`.
    """
    import coremltools as ct

    program.functions["main"].set_output_types(None)
    classifier = ct.ClassifierConfig(list(labels), predicted_feature_name=CLASS_LABEL,
                                     predicted_probabilities_output=PROBABILITIES)
    return ct.convert(program, convert_to="mlprogram", classifier_config=classifier,
                      pass_pipeline=ct.PassPipeline.EMPTY, minimum_deployment_target=target,
                      compute_precision=ct.precision.FLOAT32)


# ---------------------------------------------------------------- precisions

@dataclass(frozen=True)
class Recipe:
    compute: str                          # "fp32" | "fp16": compute precision of the program
    compress: Callable | None = None      # (mlmodel, options, context) -> mlmodel
    min_ios: int = 16
    note: str = ""


WEIGHTED_OPS = ("conv", "linear")


def weight_constants(spec) -> list[str]:
    """Names of the const ops that feed the `weight` input of conv and linear ops in a saved spec."""
    main = spec.mlProgram.functions["main"]
    ops = list(main.block_specializations[main.opset].operations)
    producers = {out.name: op for op in ops for out in op.outputs}
    names = []
    for op in ops:
        if op.type not in WEIGHTED_OPS or "weight" not in op.inputs:
            continue
        binding = op.inputs["weight"].arguments[0]
        producer = producers.get(binding.name) if binding.WhichOneof("binding") == "name" else None
        if producer is not None and producer.type == "const":
            label = producer.attributes["name"].immediateValue.tensor.strings.values if "name" in producer.attributes else []
            names.append(label[0] if label else producer.outputs[0].name)
    return sorted(set(names))


def _weights_only(mlmodel, op_config):
    """An OptimizationConfig naming exactly the weight constants of conv and linear ops.

    Why by name: a global config also compresses derived constants (Swin's relative-position
    bias); a per-op-type config trips over coremltools' constant deduplication (a zero bias shared
    by a linear and a layer_norm is a "compression config conflict" in 9.0, as in random-init Swin).
    """
    import coremltools.optimize.coreml as cto

    return cto.OptimizationConfig(op_name_configs={name: op_config for name in weight_constants(mlmodel.get_spec())})


def _int8_weights(mlmodel, options: CoreMLOptions, context):
    import coremltools.optimize.coreml as cto

    config = cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8", granularity="per_channel",
                                         weight_threshold=options.weight_threshold)
    return cto.linear_quantize_weights(mlmodel, _weights_only(mlmodel, config))


def _int4_weights(mlmodel, options: CoreMLOptions, context):
    import coremltools.optimize.coreml as cto

    config = cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int4", granularity="per_block",
                                         block_size=options.block_size, weight_threshold=options.weight_threshold)
    return cto.linear_quantize_weights(mlmodel, _weights_only(mlmodel, config))


def _palettize(nbits: int):
    def compress(mlmodel, options: CoreMLOptions, context):
        import coremltools.optimize.coreml as cto

        config = cto.OpPalettizerConfig(mode="kmeans", nbits=nbits, granularity="per_tensor",
                                        weight_threshold=options.weight_threshold)
        return cto.palettize_weights(mlmodel, _weights_only(mlmodel, config))
    return compress


def _w8a8(mlmodel, options: CoreMLOptions, context):
    from mobilevit_deploy.mil.calibrate import quantize_activations

    activations = quantize_activations(mlmodel, context["calibration"], context["feed"], options.ios)
    return _int8_weights(activations, options, context)


RECIPES: dict[Precision, Recipe] = {
    Precision.fp32: Recipe("fp32"),
    Precision.fp16: Recipe("fp16"),
    Precision.int8: Recipe("fp16", _int8_weights, note="conv/linear weights int8 linear per-channel (fp16 compute)"),
    Precision.palettize6: Recipe("fp16", _palettize(6), note="conv/linear weights 6-bit k-means palettes (fp16 compute)"),
    Precision.palettize4: Recipe("fp16", _palettize(4), note="conv/linear weights 4-bit k-means palettes (fp16 compute)"),
    Precision.int4: Recipe("fp16", _int4_weights, min_ios=18,
                           note="conv/linear weights int4 per-block (fp16 compute)"),
    Precision.w8a8: Recipe("fp16", _w8a8, min_ios=17,
                           note="experimental: int8 activations and int8 per-channel weights (fp16 compute)"),
}


# ---------------------------------------------------------------- the target

def _toolkit_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mvdeploy")
    except PackageNotFoundError:
        return "dev"


def _user_metadata(spec: ExportSpec, options: CoreMLOptions, converter: str) -> dict[str, str]:
    own = {
        f"{META_PREFIX}model": spec.model_name,
        f"{META_PREFIX}precision": spec.precision.value,
        f"{META_PREFIX}converter": converter,
        f"{META_PREFIX}ios": str(options.ios),
        f"{META_PREFIX}toolkit_version": _toolkit_version(),
    }
    if options.preprocess:
        own[f"{META_PREFIX}preprocess"] = json.dumps(options.preprocess)
    given = {key: value if isinstance(value, str) else json.dumps(value)
             for key, value in options.metadata.items() if key not in STANDARD_METADATA}
    return {**own, **given}


class CoreMLTarget:
    name = "coreml"
    suffix = ".mlpackage"
    precisions = tuple(RECIPES)
    converters = tuple(CONVERTERS)

    def unavailable_reason(self) -> str | None:
        try:
            import coremltools  # noqa: F401
        except ImportError:
            return "coremltools is not installed (pip install coremltools==9.0)"
        return None

    def convert(self, model: nn.Module, spec: ExportSpec, out_path: Path,
                calibration: Calibration | None = None) -> Artifact:
        options = CoreMLOptions.from_spec(spec)
        recipe = self._recipe(spec, options, calibration)
        converter = spec.converter or self.converters[0]
        if converter not in CONVERTERS:
            raise UnknownNameError("converter for target coreml", converter, CONVERTERS)
        reason = self.unavailable_reason()
        if reason:
            raise TargetUnavailableError(f"coreml: {reason}")

        import torch

        out_path = Path(out_path)
        wrapped = deployable(model, options)
        example = torch.rand(spec.input_shape, generator=torch.Generator().manual_seed(0))
        try:
            source = CONVERTERS[converter](wrapped, example)
            mlmodel = self._convert(source, spec, options, recipe)
            compression_notes = []
            if recipe.compress is not None:
                weights = len(weight_constants(mlmodel.get_spec()))
                context = {"calibration": calibration, "feed": self._feed_for(options)}
                mlmodel = recipe.compress(mlmodel, options, context)
                compression_notes = [self._count_compressed(mlmodel, weights, spec, options)]
        except MvDeployError:
            raise
        except Exception as e:
            raise ConversionError(f"coreml ({converter}, {spec.precision.value}, iOS {options.ios}): "
                                  f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e
        self._describe(mlmodel, spec, options, converter)
        mlmodel.save(str(out_path))
        reproducible_manifest(out_path)
        notes = [f"iOS {options.ios} ML Program, converted with {converter}"]
        notes += [recipe.note] if recipe.note else []
        notes += compression_notes
        notes += self._calibration_notes(spec, calibration)
        notes += ["image input: RGB pixels 0..255, scaled by 1/255 and normalized inside the model"] if options.image_input else []
        notes += [f"classifier with {len(options.labels)} labels; '{LOGITS}' output kept for parity"] if options.labels else []
        return self._artifact(out_path, spec.precision, converter, tuple(notes))

    def _recipe(self, spec: ExportSpec, options: CoreMLOptions, calibration: Calibration | None) -> Recipe:
        if spec.precision not in RECIPES:
            raise UnknownNameError("precision for target coreml", spec.precision.value, [p.value for p in RECIPES])
        recipe = RECIPES[spec.precision]
        if options.ios < recipe.min_ios:
            raise ConversionError(
                f"coreml: precision {spec.precision.value} needs --ios {recipe.min_ios} or later "
                f"(asked for --ios {options.ios})"
            )
        if spec.layout is not Layout.nchw:
            raise ConversionError("coreml: only the nchw layout is supported (Core ML takes NCHW tensors and images)")
        if spec.int8_io:
            raise ConversionError("coreml: int8 model I/O is not supported; inputs and outputs are float32")
        if spec.precision is Precision.w8a8 and calibration is None:
            raise CalibrationRequiredError("coreml w8a8 calibrates activations: pass calibration data")
        return recipe

    @staticmethod
    def _count_compressed(mlmodel, weights: int, spec: ExportSpec, options: CoreMLOptions) -> str:
        """A note saying how many weights were compressed; an error when none was (no silent fp16)."""
        main = mlmodel.get_spec().mlProgram.functions["main"]
        compressed = sum(op.type.startswith("constexpr_") for op in main.block_specializations[main.opset].operations)
        if compressed == 0:
            raise ConversionError(
                f"coreml {spec.precision.value}: none of the {weights} conv/linear weight tensors has more than "
                f"{options.weight_threshold} elements, so nothing was compressed (lower options['weight_threshold'])"
            )
        return (f"{compressed} of {weights} conv/linear weight tensors compressed; "
                f"tensors of <= {options.weight_threshold} elements stay float")

    @staticmethod
    def _calibration_notes(spec: ExportSpec, calibration: Calibration | None) -> list[str]:
        if spec.precision is not Precision.w8a8 or calibration is None:
            return []
        notes = [f"activations calibrated through the mvdeploy MIL interpreter on {calibration.samples} "
                 f"samples from {calibration.source}"]
        return notes + (["w8a8 calibrated on synthetic data: ranges do not reflect real images"]
                        if calibration.synthetic else [])

    @staticmethod
    def _feed_for(options: CoreMLOptions) -> Callable[[np.ndarray], np.ndarray]:
        """Canonical normalized images -> what the model's input takes (pixels for an image input)."""
        if not options.image_input:
            return lambda x: x
        mean = np.asarray(options.preprocess["mean"], dtype=np.float32).reshape(1, -1, 1, 1)
        std = np.asarray(options.preprocess["std"], dtype=np.float32).reshape(1, -1, 1, 1)
        return lambda x: (x * std + mean) * np.float32(255.0)

    @staticmethod
    def _convert(source, spec: ExportSpec, options: CoreMLOptions, recipe: Recipe):
        import coremltools as ct

        if options.image_input:
            inputs = [ct.ImageType(name=INPUT_NAME, shape=spec.input_shape, scale=1 / 255.0,
                                   bias=[0.0, 0.0, 0.0], color_layout=ct.colorlayout.RGB)]
        else:
            inputs = [ct.TensorType(name=INPUT_NAME, shape=spec.input_shape, dtype=np.float32)]
        outputs = [ct.TensorType(name=LOGITS, dtype=np.float32)]
        outputs += [ct.TensorType(name=PROBABILITIES, dtype=np.float32)] if options.labels else []
        precision = {"fp32": ct.precision.FLOAT32, "fp16": ct.precision.FLOAT16}[recipe.compute]
        target = {16: ct.target.iOS16, 17: ct.target.iOS17, 18: ct.target.iOS18}[options.ios]
        if not options.labels:
            return ct.convert(source, inputs=inputs, outputs=outputs, convert_to="mlprogram",
                              minimum_deployment_target=target, compute_precision=precision)
        program = ct.convert(source, inputs=inputs, outputs=outputs, convert_to="milinternal",
                             minimum_deployment_target=target, compute_precision=precision)
        return _add_classifier(program, options.labels, target)

    @staticmethod
    def _describe(mlmodel, spec: ExportSpec, options: CoreMLOptions, converter: str) -> None:
        for key in STANDARD_METADATA:
            if key in options.metadata:
                setattr(mlmodel, key, str(options.metadata[key]))
        for key, value in _user_metadata(spec, options, converter).items():
            mlmodel.user_defined_metadata[key] = value
        mlmodel.input_description[INPUT_NAME] = (
            "RGB image" if options.image_input else f"float32 [1, 3, {spec.image_size}, {spec.image_size}], preprocessed"
        )
        mlmodel.output_description[LOGITS] = "class logits, float32"

    def load(self, path: Path, precision: Precision | None = None) -> Artifact:
        from mobilevit_deploy.mil.program import load_spec

        spec = load_spec(Path(path))
        metadata = dict(spec.description.metadata.userDefined)
        written = metadata.get(f"{META_PREFIX}precision")
        if precision is None:
            precision = Precision(written) if written in {p.value for p in Precision} else infer_precision(spec)
        return self._artifact(Path(path), precision, metadata.get(f"{META_PREFIX}converter", ""), (), spec)

    def _artifact(self, path: Path, precision: Precision, converter: str, notes: tuple[str, ...],
                  spec=None) -> Artifact:
        from mobilevit_deploy.mil.program import load_spec

        spec = spec if spec is not None else load_spec(path)
        return Artifact(path, self.name, precision, describe_inputs(spec), describe_outputs(spec), converter, notes)

    def runner(self, artifact: Artifact, compute_units: str = "all"):
        from mobilevit_deploy.runners.coreml import CoreMLRunner

        return CoreMLRunner(artifact.path, compute_units=compute_units)


def reproducible_manifest(package: Path) -> None:
    """Replace the random item identifiers coremltools writes into Manifest.json with ids derived
    from each item's path. Why: everything else in a package is a function of the model, so the
    same model then gives byte-identical packages (bundles are checksummed and compared)."""
    import uuid

    manifest_path = Path(package) / "Manifest.json"
    manifest = json.loads(manifest_path.read_text())
    entries = manifest["itemInfoEntries"]
    new_ids = {old: str(uuid.uuid5(uuid.NAMESPACE_URL, f"mvdeploy:{item['path']}"))
               for old, item in entries.items()}
    manifest["itemInfoEntries"] = {new_ids[old]: item for old, item in entries.items()}
    manifest["rootModelIdentifier"] = new_ids[manifest["rootModelIdentifier"]]
    manifest_path.write_text(json.dumps(manifest, indent=4, sort_keys=True) + "\n")


# ---------------------------------------------------------------- reading any .mlpackage

ARRAY_DTYPES = {65568: "float32", 65552: "float16", 65600: "float64", 131104: "int32", 131080: "int8"}


def _feature_spec(feature, labels: list | None) -> TensorSpec:
    kind = feature.type.WhichOneof("Type")
    if kind == "multiArrayType":
        array = feature.type.multiArrayType
        shape = tuple(int(d) for d in array.shape)
        layout = Layout.nchw if len(shape) == 4 else None
        return TensorSpec(feature.name, shape, ARRAY_DTYPES.get(array.dataType, str(array.dataType)), layout)
    if kind == "imageType":
        image = feature.type.imageType
        channels = 1 if image.colorSpace == 10 else 3          # GRAYSCALE = 10
        return TensorSpec(feature.name, (1, channels, int(image.height), int(image.width)), "uint8", Layout.nchw)
    if kind == "dictionaryType":
        return TensorSpec(feature.name, (1, len(labels or ())), "float32")
    return TensorSpec(feature.name, (), kind or "unknown")


def describe_inputs(spec) -> tuple[TensorSpec, ...]:
    return tuple(_feature_spec(f, None) for f in spec.description.input)


def describe_outputs(spec) -> tuple[TensorSpec, ...]:
    """Float outputs first (what runners return), then a classifier's probabilities; labels dropped."""
    from mobilevit_deploy.mil.program import classifier_labels

    labels = classifier_labels(spec)
    described = [_feature_spec(f, labels) for f in spec.description.output]
    arrays = [d for d, f in zip(described, spec.description.output) if f.type.WhichOneof("Type") == "multiArrayType"]
    dicts = [d for d, f in zip(described, spec.description.output) if f.type.WhichOneof("Type") == "dictionaryType"]
    if not arrays and not dicts:
        raise ArtifactError("the model has no tensor or probability output")
    return tuple(arrays + dicts)


PRECISION_RULES: tuple[tuple[Callable[[dict], bool], Precision], ...] = (
    (lambda f: "quantize" in f["ops"], Precision.w8a8),
    (lambda f: 6 in f["palette_bits"], Precision.palettize6),
    (lambda f: 4 in f["palette_bits"], Precision.palettize4),
    (lambda f: "int4" in f["dtypes"] or "uint4" in f["dtypes"], Precision.int4),
    (lambda f: bool({"constexpr_affine_dequantize", "constexpr_blockwise_shift_scale"} & f["ops"]), Precision.int8),
    (lambda f: "fp16" in f["dtypes"], Precision.fp16),
)


def infer_precision(spec) -> Precision:
    """The precision of a package mvdeploy did not write, from the ops and dtypes it declares.

    Palettes of other bit widths (1, 2, 3, 8) have no Precision of their own; such a package
    reports fp16 weights-wise and the first rule that fits.
    """
    from mobilevit_deploy.mil.program import op_types, palette_bits

    ops = op_types(spec)
    facts = {"ops": set(ops), "dtypes": set().union(*ops.values()) if ops else set(),
             "palette_bits": palette_bits(spec)}
    for rule, precision in PRECISION_RULES:
        if rule(facts):
            return precision
    return Precision.fp32


TARGET = CoreMLTarget()
