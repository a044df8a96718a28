"""The Core ML target: validate a request, convert through a frontend and a recipe, describe the package."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np
from torch import nn

from mobilevit_deploy.debug.capture import CoreMLCapture
from mobilevit_deploy.errors import ConversionError, MvDeployError, OptionsError, first_line
from mobilevit_deploy.formats.mlpackage import (CONVERTER_KEY, describe_inputs, describe_outputs, load_proto,
                                                reproducible_package, stored_metadata, written_precision)
from mobilevit_deploy.mil.weights import stored_tensors
from mobilevit_deploy.parity.audit import StoredTensor
from mobilevit_deploy.parity.tolerances import FP16, FP32, INT8, WEIGHTS_8BIT, WEIGHTS_LOWBIT
from mobilevit_deploy.quantization.fallback import kept_note
from mobilevit_deploy.runners.coreml import CoreMLRunner
from mobilevit_deploy.spec import Artifact, Calibration, ExportSpec, Layout, Precision, Preprocess, ValidSpec
from mobilevit_deploy.targets import BaseTarget

from .frontends import FRONTENDS, LOGITS, to_mlmodel
from .metadata import describe
from .options import CoreMLOptions
from .recipes import RECIPES, compressed_note, kept_constants, module_constant, weight_constants
from .wrappers import deployable


class CoreMLTarget(BaseTarget):
    name = "coreml"
    suffix = ".mlpackage"
    precisions = tuple(RECIPES)
    converters = tuple(FRONTENDS)
    Options = CoreMLOptions
    calibrated = (Precision.w8a8,)
    float_fallback = (Precision.int8, Precision.palettize6, Precision.palettize4, Precision.int4)   # op-name configs
    tolerances = {Precision.fp32: FP32, Precision.fp16: FP16, Precision.int8: WEIGHTS_8BIT,
                  Precision.palettize6: WEIGHTS_8BIT, Precision.palettize4: WEIGHTS_LOWBIT,
                  Precision.int4: WEIGHTS_LOWBIT, Precision.w8a8: INT8}
    requires = ("coremltools",)
    intermediates = CoreMLCapture
    arm64_unsupported = "Core ML runs only on Apple's own hardware and OS; on Linux its files are checked by mvdeploy's interpreter"

    def validate(self, spec: ExportSpec) -> ValidSpec:
        spec = super().validate(spec)
        return replace(spec, options=_with_model_facts(spec.options, spec))

    def _validate(self, spec: ExportSpec) -> None:
        recipe = RECIPES[spec.precision]
        if spec.options.ios < recipe.min_ios:
            raise ConversionError(
                f"coreml: precision {spec.precision.value} needs --ios {recipe.min_ios} or later "
                f"(asked for --ios {spec.options.ios})"
            )
        if spec.layout is not Layout.nchw:
            raise ConversionError("coreml: only the nchw layout is supported (Core ML takes NCHW tensors and images)")

    def stored_tensors(self, artifact: Artifact) -> list[StoredTensor]:
        """The ML Program's float constants and decompressed weights (palettized ones are not audited)."""
        return stored_tensors(artifact.path)

    def convert(self, model: nn.Module, spec: ExportSpec, out_path: Path,
                calibration: Calibration | None = None) -> Artifact:
        spec = self.validated(spec, calibration)
        options: CoreMLOptions = spec.options
        recipe = RECIPES[spec.precision]
        converter = spec.converter or self.converters[0]

        import torch

        out_path = Path(out_path)
        wrapped = deployable(model, options)
        example = torch.rand(spec.input_shape, generator=torch.Generator().manual_seed(0))
        try:
            source = FRONTENDS[converter](wrapped, example)
            mlmodel = to_mlmodel(source, spec, options, recipe.compute)
            compression_notes = []
            if recipe.compress is not None:
                weights = len(weight_constants(mlmodel.get_spec()))
                kept = kept_constants(model, spec.keep_float)
                context = {"calibration": calibration, "feed": _feed_for(options, spec.image_size),
                           "keep": frozenset().union(*kept.values())}
                mlmodel = recipe.compress(mlmodel, options, context)
                compression_notes = [compressed_note(mlmodel, weights, spec, options)]
                compression_notes += [_kept_float(mlmodel, kept)] if kept else []
        except MvDeployError:
            raise
        except Exception as e:
            raise ConversionError(f"coreml ({converter}, {spec.precision.value}, iOS {options.ios}): "
                                  f"{type(e).__name__}: {first_line(e)}") from e
        describe(mlmodel, spec, options, converter)
        mlmodel.save(str(out_path))
        reproducible_package(out_path)
        notes = [f"iOS {options.ios} ML Program, converted with {converter}"]
        notes += [recipe.note] if recipe.note else []
        notes += compression_notes
        notes += _calibration_notes(spec, calibration)
        notes += ["image input: RGB pixels 0..255, scaled by 1/255 and normalized inside the model"] if options.image_input else []
        notes += [f"classifier with {len(options.labels)} labels; '{LOGITS}' output kept for parity"] if options.labels else []
        return replace(self._artifact(out_path, spec.precision, converter, tuple(notes)), keep_float=spec.keep_float)

    def load(self, path: Path, precision: Precision | None = None) -> Artifact:
        proto = load_proto(Path(path))
        if precision is None:
            precision = written_precision(proto)
        return self._artifact(Path(path), precision, stored_metadata(proto).get(CONVERTER_KEY, ""), (), proto)

    def _artifact(self, path: Path, precision: Precision, converter: str, notes: tuple[str, ...],
                  proto=None) -> Artifact:
        proto = proto if proto is not None else load_proto(path)
        return Artifact(path, self.name, precision, describe_inputs(proto), describe_outputs(proto), converter, notes)

    def runner(self, artifact: Artifact, **engine_options) -> CoreMLRunner:
        """engine_options: compute_units ("all" | "cpu_only"), use_apple_runtime (default: on macOS)."""
        return CoreMLRunner(artifact, **engine_options)


def _with_model_facts(options: CoreMLOptions, spec: ExportSpec) -> CoreMLOptions:
    """The model's own preprocessing and provenance, from the spec, where the options leave them out:
    the package records them in its metadata, and an image input applies mean/std inside."""
    preprocess = options.preprocess or (spec.preprocess.to_dict() if spec.preprocess is not None else None)
    if options.image_input and not (preprocess and "mean" in preprocess and "std" in preprocess):
        raise OptionsError("coreml: image_input needs the model's preprocessing (mean and std, applied inside "
                           "the model): pass options preprocess={'mean': [...], 'std': [...]}")
    metadata = dict(options.metadata)
    if spec.weights:
        metadata.setdefault("weights", spec.weights)
        metadata.setdefault("model", spec.model_name)
    if preprocess is not None and spec.preprocess is not None:
        metadata.setdefault("preprocess", json.dumps(spec.preprocess.to_dict()))
    return replace(options, preprocess=preprocess, metadata=metadata)


def _feed_for(options: CoreMLOptions, size: int) -> Callable[[np.ndarray], np.ndarray]:
    """Canonical normalized images -> what the model's input takes (pixels for an image input)."""
    if not options.image_input:
        return lambda x: x
    return Preprocess.from_dict(options.preprocess, size).to_pixels


def _calibration_notes(spec: ExportSpec, calibration: Calibration | None) -> list[str]:
    if spec.precision is not Precision.w8a8 or calibration is None:
        return []
    notes = [f"activations calibrated through the mvdeploy MIL interpreter on {calibration.samples} "
             f"samples from {calibration.source}"]
    return notes + (["w8a8 calibrated on synthetic data: ranges do not reflect real images"]
                    if calibration.synthetic else [])


TARGET = CoreMLTarget()


def compressed_modules(proto, kept: dict[str, set[str]]) -> list[str]:
    """Of the kept modules, those with a weight the program does not hold as a plain float const (a
    compressed weight is made by a constexpr_ op instead), or with no weight constant at all."""
    plain = {module_constant(name) for name in weight_constants(proto)}
    return [module for module, names in kept.items() if not names or not names <= plain]


def _kept_float(mlmodel, kept: dict[str, set[str]]) -> str:
    """The program checked: each kept module's weights stay float consts; else ConversionError."""
    wrong = compressed_modules(mlmodel.get_spec(), kept)
    if wrong:
        raise ConversionError(f"--keep-float: the program still compresses (or has no weight of) {', '.join(wrong)}")
    return kept_note(tuple(kept))
