"""The main job as library calls: prepare a model, convert it for a target, check parity.

The convert sequence (validate -> calibration -> parity inputs -> convert -> check -> move into place)
is written once, in `convert_all`; the CLI and the Python API (both through `convert_model`),
`apps.bundle` and the report's cells (`quantization.cells`) all run it. `check_file` checks parity of a
file that already exists (`mvdeploy check`).

Writes are atomic: a target writes into a hidden staging folder inside the output folder, the parity
check runs there, and only then are the artifact and its report renamed into place (a file that fails
parity into <out>/failed/). A failed conversion leaves nothing behind.

Targets are reached through the registry (`targets.get_target`), never imported: they are plugins.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from torch import nn

from .arm64 import arm64_parity, require_arm64
from .calibration import DEFAULT_SAMPLES, UNVALIDATED_NOTE, calibration_again, calibration_for
from .checkpoints import REFERENCE_CHECKPOINTS, ReferenceCheckpoint
from .data import load_folder, read_labels, synthetic_images
from .emulation import CpuProfile
from .errors import (ArtifactError, DataError, DegenerateReferenceError, InputSizeError, InvalidValueError,
                     ShapeMismatchError, at_least, first_line)
from .fusion import fuse
from .models import create_model, model_config, trained_size
from .models.model_folder import ModelFolder, class_count, model_name, read_model_folder
from .models.layers import fuse_conv_bn
from .models.weights import head_classes, load_state, load_weights, read_checkpoint
from .outputs import ensure_folder, move_into_place, require_writable_folder, staging
from .parity import ParityReport, compare, parity_path, tolerance_for
from .parity.compare import degenerate
from .parity.audit import FOLD_ROUNDING, Audit, Folded, audit, not_read, with_folded_norms
from .parity.report import recorded_recipe
from .quantization.fallback import parse_modules, require_modules
from .runners.torch import TorchRunner
from .spec import (Artifact, Calibration, ExportSpec, Layout, Precision, Preprocess, ValidSpec, parse_choice,
                   parse_precisions)
from .targets import Target, get_target

FAILED_FOLDER = "failed"        # <out>/failed/: artifacts that failed parity, kept for inspection
OUT_ROOT = Path("mvdeploy-out")  # where a conversion of a built-in model goes without --out: OUT_ROOT/<model>
RANDOM = "random"               # weights="random": the seeded random init, even where a reference checkpoint exists
DEFAULT_MODEL = "mobilevit_xxs"  # what a run builds when neither a name nor the weights' folder says


@dataclass
class PreparedModel:
    """The PyTorch source of truth for one run: the unfused model with its weights and preprocessing."""

    name: str
    model: nn.Module
    image_size: int
    num_classes: int
    preprocess: Preprocess
    weights: str                # a path, "random", or "reference:<checkpoint> (...)" (see REFERENCE_CHECKPOINTS)
    labels: list[str] | None = None   # class names, when the weights come with them
    reference: ReferenceCheckpoint | None = None   # the shipped checkpoint these weights are, with its own data
    notes: list[str] = field(default_factory=list)  # how the weights were read (source layout, folded channel flip)

    @property
    def trained(self) -> bool:
        return self.weights != RANDOM

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (1, 3, self.image_size, self.image_size)

    def spec(self, precision: Precision = Precision.fp32, *, layout: Layout = Layout.nchw, int8_io: bool = False,
             converter: str | None = None, options=None, keep_float: Sequence[str] = ()) -> ExportSpec:
        """What to ask a target for, for this model; `keep_float`: modules to leave in float."""
        return ExportSpec(self.name, self.image_size, precision, layout, int8_io, converter, options,
                          self.preprocess, self.weights, tuple(keep_float))

    def class_names(self, labels_file: Path | None = None) -> list[str]:
        """--labels FILE (one per line), else the weights' own labels, else class_0..class_{K-1}."""
        if labels_file is None:
            return list(self.labels) if self.labels else [f"class_{i}" for i in range(self.num_classes)]
        labels = read_labels(Path(labels_file))
        if len(labels) != self.num_classes:
            raise DataError(f"{labels_file} has {len(labels)} labels; the model has {self.num_classes} classes")
        return labels


def model_for(name: str | None, weights: Path | str | None = None) -> str:
    """The model a run builds: `name`, else the one the weights' folder describes (config.json), else
    DEFAULT_MODEL; a name the folder contradicts is one WeightsConflictError line naming both."""
    return model_name(name, _folder_of(weights)) or DEFAULT_MODEL


def _folder_of(weights: Path | str | None) -> ModelFolder | None:
    """What the folder of a --weights file says (None for no file, "random", or a bare checkpoint)."""
    if weights is None or str(weights) == RANDOM or not Path(weights).exists():
        return None
    return read_model_folder(Path(weights))


def prepare_model(name: str | None, weights: Path | str | None = None, num_classes: int | None = None,
                  image_size: int | None = None, weights_format: str | None = None) -> PreparedModel:
    """The model in eval mode with its weights: a file; "random" (also Path("random"), as the CLI passes
    it) for the seeded init; None for the model's reference checkpoint when it has one and
    num_classes is None or the checkpoint's, else the seeded init. `weights_format` ("hf", "timm",
    "torchvision") names who wrote the file; None detects it from the key names.

    A weights file brings its class count (its head's rows) and, from its folder (`models.model_folder`:
    Hugging Face's config.json and preprocessor_config.json), the model (`name` None), the class names,
    the input size and the preprocessing; `image_size` wins over the folder's, and a name or
    `num_classes` that contradicts the weights is one WeightsConflictError line naming both."""
    folder = _folder_of(weights)
    name = model_name(name, folder) or DEFAULT_MODEL
    config = model_config(name)
    if weights_format is not None:
        from .models.weights import WeightsFormat
        from .spec import parse_choice
        parse_choice(WeightsFormat, str(getattr(weights_format, "value", weights_format)), "--weights-format")
        if weights is None or str(weights) == RANDOM:
            raise InvalidValueError("--weights-format names who wrote a --weights file: pass --weights FILE too")
    reference = REFERENCE_CHECKPOINTS.get(name)
    if weights is None and reference is not None and num_classes in (None, reference.num_classes):
        return prepare_reference(reference, image_size)
    if weights is None or str(weights) == RANDOM:
        size = config.default_image_size if image_size is None else image_size
        classes = 1000 if num_classes is None else num_classes
        model = create_model(name, num_classes=classes, image_size=size)
        return PreparedModel(name, model.eval(), size, classes, config.preprocess.with_size(size), RANDOM)
    state, read_notes = read_checkpoint(Path(weights))
    classes, classes_note = class_count(num_classes, head_classes(state, config.family, weights_format), folder)
    classes = 1000 if classes is None else classes
    folder_size = folder.image_size if folder is not None else None
    size = image_size or folder_size or config.default_image_size
    processor = folder.processor if folder is not None else None
    preprocess = (processor.preprocess if processor is not None else config.preprocess).with_size(size)
    notes = [*(folder.notes if folder is not None else ()), *([classes_note] if classes_note else [])]
    if image_size is not None and folder_size is not None and image_size != folder_size:
        notes.append(f"input {image_size}x{image_size} from --image-size (the folder says {folder_size})")
    # a weights file is taken as trained at the config's side, as every public checkpoint is, unless its
    # Swin bias tables say it was trained at this side
    trained = config.default_image_size if folder is not None else trained_size(name, state, size)
    if trained != config.default_image_size:
        notes.append(f"taken as trained at {size}x{size}: its Swin bias tables are the ones of that side")
    model = create_model(name, num_classes=classes, image_size=size, trained_size=trained)
    report = load_state(model, state, read_notes, Path(weights), name, weights_format)
    return PreparedModel(name, model.eval(), size, classes, preprocess, str(weights),
                         list(folder.labels) if folder is not None and folder.labels else None,
                         notes=notes + report.notes)


def prepare_module(module: nn.Module, image_size: int, name: str | None = None,
                   preprocess: Preprocess | None = None, labels: list[str] | None = None) -> PreparedModel:
    """A user's own nn.Module (one NCHW image batch in, logits or one tensor out) as the source of truth.
    `preprocess` says what its input expects (default: RGB scaled to [0, 1], no mean/std)."""
    import torch

    if not isinstance(module, nn.Module):
        raise InvalidValueError(f"expected a torch.nn.Module, got {type(module).__name__}")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or not 8 <= image_size <= 2048:
        raise InvalidValueError(f"image_size must be an integer between 8 and 2048 for a custom module; got {image_size!r}")
    module = module.eval()
    try:
        with torch.no_grad():
            out = module(torch.zeros(1, 3, image_size, image_size))
    except Exception as e:
        raise InvalidValueError(f"the module does not take a [1, 3, {image_size}, {image_size}] image batch: "
                                f"{type(e).__name__}: {first_line(e)}") from None
    if not isinstance(out, torch.Tensor) or out.ndim < 2 or out.shape[0] != 1:
        raise InvalidValueError("the module must return one tensor [N, ...] (e.g. logits [N, K]); "
                                f"it returned {type(out).__name__}{tuple(getattr(out, 'shape', ()))}")
    classes = int(out[0].numel())
    preprocess = preprocess or Preprocess(image_size, image_size)
    name = name or type(module).__name__.lower()
    return PreparedModel(name, module, image_size, classes, preprocess.with_size(image_size), f"user module {name}",
                         labels)


def prepare_reference(reference: ReferenceCheckpoint, image_size: int | None = None) -> PreparedModel:
    """A model with a shipped reference checkpoint, at the checkpoint's side unless asked otherwise."""
    size = reference.image_size if image_size is None else image_size
    if reference.fixed_size_reason and size != reference.image_size:
        side = reference.image_size
        raise InputSizeError(
            f"the {reference.name} reference weights fit only {side}x{side} inputs ({reference.fixed_size_reason}); "
            f"got {size}: use --image-size {side}, or --weights FILE / --weights random for another size"
        )
    model = create_model(reference.model, num_classes=reference.num_classes, image_size=size,
                         trained_size=reference.image_size)
    report = load_weights(model, reference.path, reference.model, weights_format="timm")   # our own names
    preprocess = model_config(reference.model).preprocess.with_size(size)
    return PreparedModel(reference.model, model.eval(), size, reference.num_classes, preprocess,
                         reference.describe(), list(reference.labels), reference=reference, notes=report.notes)


@dataclass
class ParityInputs:
    images: np.ndarray          # [N, 3, H, W] float32, preprocessed
    synthetic: int
    real: int
    source: str | None = None
    skipped: int = 0

    def summary(self) -> str:
        real = f" + {self.real} real ({self.source})" if self.real else ""
        return f"{self.synthetic} synthetic{real} images"

    def describe(self) -> dict:
        """For the parity report; `sha256` fingerprints the image values, so two runs can show they
        checked the same images."""
        import hashlib

        digest = hashlib.sha256(np.ascontiguousarray(self.images, dtype="<f4").tobytes()).hexdigest()
        return {"synthetic": self.synthetic, "real": self.real, "source": self.source,
                "skipped_unreadable": self.skipped, "total": len(self.images), "sha256": digest}


def parity_inputs(prepared: PreparedModel, data: Path | None = None, synthetic: int = 8,
                  real: int = 32, progress: bool = False, calibration: Calibration | None = None) -> ParityInputs:
    """Seeded synthetic images, plus up to `real` images from `data`, else from the reference
    checkpoint's held-out test split when the weights are one, else from the calibration folder
    (never the images calibration used) when real images were given only for calibration."""
    images = [synthetic_images(synthetic, prepared.image_size, prepared.preprocess, seed=0)]
    loaded = None
    exclude = None
    if data is None and prepared.reference is None and calibration is not None and calibration.files and real:
        data, exclude = Path(calibration.source), set(calibration.files)
    if data is not None:
        try:
            loaded = load_folder(Path(data), prepared.preprocess, count=real, exclude=exclude,
                                 progress="reading parity images" if progress else None)
        except DataError:
            if exclude is None:
                raise
            loaded = None                   # every image went to calibration: synthetic parity only
        if loaded is not None and exclude is not None:
            loaded = replace(loaded, source=f"{loaded.source}, disjoint from the calibration sample")
    elif prepared.reference is not None and real:
        loaded = prepared.reference.read("test", prepared.preprocess, real)
    if loaded is not None:
        images.append(loaded.images)
    stacked = np.concatenate([x.numpy() for x in images]).astype(np.float32)
    return ParityInputs(stacked, synthetic, len(loaded.images) if loaded else 0,
                        loaded.source if loaded else None, loaded.skipped if loaded else 0)


def require_fit(artifact: Artifact, prepared: PreparedModel) -> None:
    """The artifact's input and output shapes against the model's, before anything runs."""
    shape = artifact.inputs[0].canonical_shape
    if shape[1:] != prepared.input_shape[1:]:
        raise ShapeMismatchError(f"{Path(artifact.path).name} takes input {list(shape)}, the model "
                                 f"{list(prepared.input_shape)}: pass --image-size {shape[2]}")
    classes = int(np.prod(artifact.outputs[0].shape[1:])) if artifact.outputs else 0
    if classes != prepared.num_classes:
        raise ShapeMismatchError(f"{Path(artifact.path).name} has {classes} outputs, the model "
                                 f"{prepared.num_classes}: pass --num-classes {classes}")


def check_artifact(artifact: Artifact, target: Target, prepared: PreparedModel, inputs: ParityInputs,
                   label: Path | None = None, exported: nn.Module | None = None,
                   calibration: Calibration | None = None, recipe: dict | None = None,
                   arm_cpus: Sequence[CpuProfile] = ()) -> ParityReport:
    """Run the artifact and the PyTorch model on the same inputs and compare (accuracy), run it against
    its replica (integrity: `artifact.replica`, else the target's, from `calibration`) and audit its
    weights against `exported` (the fused model it was converted from; default: `prepared`'s, fused).
    With `arm_cpus`, the accuracy comparison again on the engine's ARM64 build, once per emulated CPU
    (`arm64.arm64_parity`). `label`: the path the report names (the final path when checked in a staging
    folder); `recipe`: what the report records for a later check. Reference outputs that carry no signal
    (`parity.compare.degenerate`) are a DegenerateReferenceError, before the artifact runs."""
    require_fit(artifact, prepared)
    with TorchRunner(prepared.model, input_shape=prepared.input_shape) as reference_runner:
        reference = reference_runner.infer(inputs.images)
        reference_engine = reference_runner.engine
    why = degenerate(reference)
    if why is not None:                 # nothing to compare against: said as it is, not as a failed file
        raise DegenerateReferenceError(why)
    exported = exported if exported is not None else fuse(prepared.model).model
    tolerance = tolerance_for(target, artifact.precision)
    engine = target.name
    integrity, audit, arm64 = None, None, None
    try:
        with target.runner(artifact) as runner:
            engine = runner.engine
            candidate = runner.infer(inputs.images)
        metrics = compare(reference, candidate)
        failures = tolerance.failures(metrics, trained=prepared.trained)
        integrity, wrong = _integrity(artifact, target, exported, calibration, inputs, candidate, prepared.trained)
        audit = _audit(artifact, target, exported)
        failures += [f"integrity: {line}" for line in wrong] + [f"weights: {line}" for line in audit.failures]
        if arm_cpus:
            arm64, wrong = arm64_parity(artifact, target, arm_cpus, inputs.images, reference, candidate, tolerance,
                                        prepared.trained)
            failures += wrong
    except (ArtifactError, ShapeMismatchError) as e:   # a crash or a load failure is a failed check
        metrics, failures = None, [str(e)]
    notes = [*prepared.notes, *artifact.notes]
    if not prepared.trained:
        notes.append("weights are random: a weak test of quantization; prefer trained weights and --data")
    return ParityReport(
        artifact=str(label or artifact.path), target=target.name, precision=artifact.precision.value,
        reference=f"{reference_engine}, {prepared.name} unfused, {prepared.image_size}x{prepared.image_size}",
        engine=engine, samples=inputs.describe(), metrics=metrics, tolerance=tolerance,
        failures=failures, weights=prepared.weights, notes=notes,
        integrity=integrity, audit=audit.to_dict() if audit is not None else None, recipe=recipe, arm64=arm64,
    )


def _integrity(artifact: Artifact, target: Target, exported: nn.Module, calibration: Calibration | None,
               inputs: ParityInputs, candidate: np.ndarray, trained: bool) -> tuple[dict, list[str]]:
    """The file against its replica, within the target's integrity bound. -> (report block, failures)"""
    replica = artifact.replica or target.replica(exported, artifact, calibration)
    bound = target.integrity.get(artifact.precision)
    if not replica.reproduced or bound is None:
        why = replica.what if not replica.reproduced else f"{target.name} declares no integrity bound for " \
                                                          f"{artifact.precision.value}"
        return {"checked": False, "why": why}, []
    metrics = compare(replica.outputs(inputs.images), candidate)
    wrong = bound.failures(metrics, trained=trained)
    return {"checked": True, "reference": replica.what, "metrics": metrics.to_dict(), "tolerance": bound.to_dict(),
            "failures": wrong}, wrong


def _audit(artifact: Artifact, target: Target, exported: nn.Module) -> Audit:
    """Every weight the file stores against the fused model's parameters (`parity.audit`)."""
    stored = target.stored_tensors(artifact)
    if stored is None:
        return not_read(target.weights_unread)
    return audit(stored, with_folded_norms(audited_parameters(exported)),
                 norm_epsilons(exported) if target.keeps_epsilons else None)


def audited_parameters(model: nn.Module) -> dict[str, np.ndarray | Folded]:
    """The model's float parameters and buffers, plus each Conv2d -> BatchNorm2d pair that `fuse` leaves
    (a user's plain nn.Sequential) folded as a converter folds it: '<conv> (+BatchNorm folded).weight'."""
    params: dict[str, np.ndarray | Folded] = {name: value.detach().float().numpy()
                                              for name, value in model.state_dict().items() if value.is_floating_point()}
    for prefix, module in model.named_modules():
        if not isinstance(module, nn.Sequential):
            continue
        children = list(module.named_children())
        for (name, conv), (_, norm) in zip(children, children[1:]):
            if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d) and norm.running_var is not None:
                folded = fuse_conv_bn(conv, norm)
                label = f"{prefix}.{name}" if prefix else name
                bias = folded.bias.detach().double().numpy()
                params[f"{label} (+BatchNorm folded).weight"] = folded.weight.detach().double().numpy()
                beta = norm.bias.detach().double().numpy() if norm.bias is not None else 0.0   # affine=False: none
                params[f"{label} (+BatchNorm folded).bias"] = Folded(bias, FOLD_ROUNDING * (np.abs(beta) + np.abs(bias)))
    return params


def norm_epsilons(model: nn.Module) -> dict[float, list[str]]:
    """Each LayerNorm / GroupNorm epsilon of the model -> the modules that use it."""
    out: dict[float, list[str]] = {}
    for name, module in model.named_modules():
        if isinstance(module, (nn.LayerNorm, nn.GroupNorm)):
            out.setdefault(float(module.eps), []).append(name)
    return out


@dataclass
class ConvertResult:
    artifact: Artifact
    report: ParityReport | None
    fused_pairs: int
    seconds: float              # conversion time, parity excluded


def artifact_name(model: str, precision: Precision, target: Target, converter: str | None) -> str:
    extra = f"-{converter}" if converter and converter != target.converters[0] else ""
    return f"{model}-{precision.value}{extra}{target.suffix}"


@dataclass
class Conversion:
    """One run of the convert sequence: a result per spec, and the images it calibrated and checked with."""

    prepared: PreparedModel
    results: list[ConvertResult]
    calibration: Calibration | None     # None when no precision calibrates
    inputs: ParityInputs | None         # None with check=False
    budget: object = None               # the accuracy budget's steps (quantization.budget.BudgetRun), when one ran

    @property
    def failed(self) -> list[ParityReport]:
        return [r.report for r in self.results if r.report is not None and not r.report.passed]


def convert_all(prepared: PreparedModel, target: str | Target, specs: Sequence[ExportSpec], out_dir: Path, *,
                calibration: Calibration | None = None, calib_data: str | Path | None = None,
                calib_samples: int = DEFAULT_SAMPLES, inputs: ParityInputs | None = None, data: Path | None = None,
                check: bool = True, do_fuse: bool = True, progress: bool = False,
                on_step: Callable[[str], None] | None = None, arm_cpus: Sequence[CpuProfile] = ()) -> Conversion:
    """The convert sequence, written once (the CLI, the Python API, bundles and report cells run it):

    1. every spec validated by `target.validate`, once, before any work (a ValidSpec of this target
       passes as it is; `target.convert` never validates it again);
    2. calibration images when a precision calibrates: `calibration` as given, else
       `calibration_for(prepared, calib_data, samples=calib_samples)`;
    3. parity inputs (unless check=False): `inputs` as given, else `parity_inputs(prepared, data,
       calibration=...)`, so whoever calls, the same images are chosen (real ones never calibration's);
    4. per spec: fuse, `target.convert` in a staging folder, parity against PyTorch, then the artifact and
       its <artifact>.parity.json renamed into `out_dir` (a file that fails parity into <out_dir>/failed/).

    `on_step(text)` hears of each conversion as it starts (after any images are read); `arm_cpus`: the
    emulated phone CPUs each file is also checked on (`check_artifact`)."""
    target = get_target(target) if isinstance(target, str) else target
    valid = [spec if spec.validated_by(target.name) else target.validate(spec) for spec in specs]
    kept = {name for spec in valid for name in spec.keep_float}
    if kept:
        require_modules(fuse(prepared.model).model if do_fuse else prepared.model, sorted(kept))
    if check:
        require_arm64(target, arm_cpus)
    if calibration is None and any(target.needs_calibration(spec.precision) for spec in valid):
        calibration = calibration_for(prepared, calib_data, samples=calib_samples, progress=progress)
    if check and inputs is None:
        inputs = parity_inputs(prepared, data, progress=progress, calibration=calibration)
    results = []
    for spec in valid:
        if on_step is not None:
            on_step(f"converting {prepared.name} to {target.name} {spec.precision.value}...")
        results.append(_convert_one(prepared, target, spec, Path(out_dir), calibration, inputs if check else None,
                                    do_fuse, arm_cpus))
    return Conversion(prepared, results, calibration, inputs if check else None)


def convert(prepared: PreparedModel, target: str | Target, spec: ExportSpec, out_dir: Path,
            **sequence) -> ConvertResult:
    """One spec through `convert_all` (the keyword arguments are its own)."""
    return convert_all(prepared, target, [spec], out_dir, **sequence).results[0]


def convert_model(model: str | PreparedModel | nn.Module | None, target: str | Target,
                  precisions: str | Sequence[str], out: Path | str | None = None, *, weights: Path | str | None = None,
                  weights_format: str | None = None, image_size: int | None = None, num_classes: int | None = None,
                  name: str | None = None, preprocess: Preprocess | None = None, layout: str | Layout = Layout.nchw,
                  int8_io: bool = False, converter: str | None = None, options: dict | None = None,
                  labels_file: Path | None = None, calib_samples: int = DEFAULT_SAMPLES,
                  keep_float: str | Sequence[str] | None = None, budget=None, **sequence) -> Conversion:
    """A conversion as a user asks for it, by name, through `convert_all`: what the CLI's `convert` and
    the API's `convert` both call. `model`: a built-in name, None (the one the weights' folder describes,
    `model_for`), a PreparedModel, or your own nn.Module (give `image_size`; `name` and `preprocess` if you
    like). `precisions`: "fp32,int8" or a list of names. `keep_float`: modules to leave in float in a
    quantized conversion ("a.b,c.d" or a list; the target's `float_fallback` precisions). `budget`: a
    `quantization.budget.AccuracyBudget`, which then runs the sequence until the file is within it.
    `options`: the target's own (a None value is left out: the target's default); `labels_file`: class
    names for a target that takes `labels`; `out` None: OUT_ROOT/<model>. Names, counts and the output
    folder are refused before any work. `sequence`: `convert_all`'s keyword arguments (calib_data, data,
    check, do_fuse, progress, on_step)."""
    target = get_target(target) if isinstance(target, str) else target
    chosen = parse_precisions(precisions)
    layout = parse_choice(Layout, getattr(layout, "value", layout), "layout")
    at_least(calib_samples, 1, "--calib-samples")
    if model is None or isinstance(model, str):
        model = model_for(model, weights)
    out_dir = Path(out) if out is not None else (OUT_ROOT / model if isinstance(model, str) else OUT_ROOT)
    require_writable_folder(out_dir)
    prepared = _prepared(model, weights, weights_format, image_size, num_classes, name, preprocess)
    given = {key: value for key, value in (options or {}).items() if value is not None}
    if labels_file is not None:
        given["labels"] = tuple(prepared.class_names(labels_file))
    options = target.options(**given)
    specs = [prepared.spec(p, layout=layout, int8_io=int8_io, converter=converter, options=options,
                           keep_float=parse_modules(keep_float)) for p in chosen]
    run = budget.convert if budget is not None else convert_all
    return run(prepared, target, specs, out_dir, calib_samples=calib_samples, **sequence)


def _prepared(model: str | PreparedModel | nn.Module, weights, weights_format, image_size, num_classes, name,
              preprocess) -> PreparedModel:
    if isinstance(model, PreparedModel):
        return model
    if isinstance(model, str):
        return prepare_model(model, weights, num_classes, image_size, weights_format=weights_format)
    if image_size is None:
        raise InvalidValueError("a custom module needs image_size= (the square input side it is exported at)")
    return prepare_module(model, image_size, name=name, preprocess=preprocess)


def _convert_one(prepared: PreparedModel, target: Target, spec: ValidSpec, out_dir: Path,
                 calibration: Calibration | None, inputs: ParityInputs | None, do_fuse: bool,
                 arm_cpus: Sequence[CpuProfile] = ()) -> ConvertResult:
    """Step 4 of `convert_all` for one validated spec; `inputs` None: no parity check."""
    fusion = fuse(prepared.model) if do_fuse else None
    export_model = fusion.model if fusion else prepared.model

    out_dir = Path(out_dir)
    created = ensure_folder(out_dir)
    try:
        return _convert_staged(prepared, target, spec, out_dir, export_model,
                               fusion.fused_pairs if fusion else 0, inputs, calibration, arm_cpus)
    except BaseException:
        if created and not any(out_dir.iterdir()):
            out_dir.rmdir()                  # leave no trace of a failed first conversion
        raise


def _convert_staged(prepared: PreparedModel, target: Target, spec: ValidSpec, out_dir: Path,
                    export_model: nn.Module, fused_pairs: int, inputs: ParityInputs | None,
                    calibration: Calibration | None, arm_cpus: Sequence[CpuProfile]) -> ConvertResult:
    final = out_dir / artifact_name(prepared.name, spec.precision, target, spec.converter)
    with staging(out_dir) as tmp:
        staged = Path(tmp) / final.name
        start = time.perf_counter()
        artifact = target.convert(export_model, spec, staged, calibration)
        seconds = time.perf_counter() - start
        if calibration is not None and calibration.synthetic and target.needs_calibration(spec.precision):
            artifact = replace(artifact, notes=(*artifact.notes, UNVALIDATED_NOTE))
        recipe = {"converter": artifact.converter, "keep_float": list(artifact.keep_float),
                   "calibration": calibration.record() if calibration is not None and target.needs_calibration(
                       spec.precision) else None}
        report = None if inputs is None else check_artifact(artifact, target, prepared, inputs, label=final,
                                                            exported=export_model, recipe=recipe, arm_cpus=arm_cpus)
        if report is not None and not report.passed:
            # A file that fails parity never takes the place of what is there: it goes to failed/.
            final = out_dir / FAILED_FOLDER / final.name
            ensure_folder(final.parent)
            report.artifact = str(final)
        if report is not None:
            report.write(Path(tmp) / parity_path(final).name)
        move_into_place(staged, final)
        if report:
            move_into_place(Path(tmp) / parity_path(final).name, parity_path(final))
        else:
            parity_path(final).unlink(missing_ok=True)     # a stale report must not vouch for a new file
    return ConvertResult(replace(artifact, path=final, replica=None), report, fused_pairs, seconds)


def load_for_model(path: Path, model: str, weights: Path | str | None = None,
                   num_classes: int | None = None) -> tuple[Target, Artifact, PreparedModel]:
    """An existing file, its target, and the PyTorch model it should match: the input size comes from
    the file, the classes too unless `num_classes` says otherwise."""
    from .targets import load_artifact

    target, artifact = load_artifact(path)
    classes = int(np.prod(artifact.outputs[0].shape[1:])) if num_classes is None else num_classes
    return target, artifact, prepare_model(model, weights, classes, artifact.inputs[0].image_size)


def check_file(path: Path, model: str, weights: Path | str | None = None, num_classes: int | None = None,
               data: Path | None = None, progress: bool = False,
               arm_cpus: Sequence[CpuProfile] = ()) -> tuple[Artifact, ParityReport]:
    """Check an existing file (possibly not made by mvdeploy) against the PyTorch model and write
    <file>.parity.json beside it. The input size comes from the file; the classes from the file
    unless `num_classes` says otherwise (a mismatch is a ShapeMismatchError, not a traceback). When an
    earlier report of mvdeploy's beside it records the recipe, the int8 replica is rebuilt from it."""
    from .targets import target_for_path

    require_arm64(target_for_path(Path(path)), arm_cpus)     # before any work
    target, artifact, prepared = load_for_model(path, model, weights, num_classes)
    recipe = recorded_recipe(path)
    if recipe and recipe.get("converter"):
        artifact = replace(artifact, converter=recipe["converter"])
    if recipe and recipe.get("keep_float"):
        artifact = replace(artifact, keep_float=tuple(recipe["keep_float"]))
    inputs = parity_inputs(prepared, data, progress=progress)
    calibration = None
    if recipe and recipe.get("calibration") and target.needs_calibration(artifact.precision):
        calibration = calibration_again(prepared, recipe["calibration"])
    report = check_artifact(artifact, target, prepared, inputs, calibration=calibration, recipe=recipe,
                            arm_cpus=arm_cpus)
    report.write(parity_path(path))
    return artifact, report
