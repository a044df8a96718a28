"""What a quantization report is asked to measure, validated before any work.

`ReportRequest` holds the choices as a user gives them (names as comma-separated text or lists, the
CLI's flags one for one) with the report's defaults; `plan_report` turns it into a `ReportPlan` or
refuses it with one `MvDeployError` line: counts below 1, --workers together with --ray-address,
--artifact-store without Ray, an unavailable target, no (target, precision) pair to measure, an
--eval-data folder or listing file that does not exist (or a listing that names a missing image),
evaluation and calibration images that overlap, an output folder that cannot be written. Nothing is
built or written before the plan stands; `run.py` then does the work.

Only the standard library at the top: the CLI reads the defaults below when it starts.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

DEFAULT_MODELS = ("mobilevit_xxs", "swin_micro")              # both reference checkpoints
DEFAULT_TARGETS = ("tflite", "coreml")
DEFAULT_PRECISIONS = ("fp32", "fp16", "int8", "palettize6", "palettize4")   # each target takes those it supports
DEFAULT_OUT = Path("mvdeploy-out/report")
DEFAULT_REPEATS = 30             # timed single-image runs per variant
DEFAULT_SHARD_SIZE = 256         # evaluation images per task: small enough to spread, large enough to amortise a load
DEFAULT_FALLBACKS = 0            # layers per int8 file converted again kept float (each is one more conversion)

Names = str | Sequence[str]      # "a,b" or ["a", "b"]


@dataclass(frozen=True)
class ReportRequest:
    models: Names = DEFAULT_MODELS
    targets: Names = DEFAULT_TARGETS
    precisions: Names = DEFAULT_PRECISIONS
    weights: Path | str | None = None
    weights_format: str | None = None
    eval_data: Path | None = None          # an ImageFolder tree or a listing file; None: the reference checkpoint's test split
    calib_data: str | None = None          # a folder disjoint from eval_data, or "synthetic"
    eval_limit: int | None = None
    repeats: int = DEFAULT_REPEATS
    out: Path = DEFAULT_OUT
    reuse: bool = True                     # keep an earlier run's checked artifact of the same weights
    workers: int | None = None             # a local Ray of N workers for this run
    ray_address: str | None = None         # a running Ray cluster
    shard_size: int = DEFAULT_SHARD_SIZE
    artifact_store: Path | None = None     # a folder the Ray workers and this machine all reach
    command: str = ""                      # the command line, recorded in report.json
    arm_cpus: tuple = ()                   # emulation.CpuProfile: parity also on ARM64 for targets that run there
    fallbacks: int = DEFAULT_FALLBACKS     # per int8 file: its N noisiest layers, each kept float in a conversion of its own


@dataclass(frozen=True)
class ReportPlan:
    request: ReportRequest
    models: list[str]
    targets: list[str]
    precisions: list              # [Precision]: those asked for, in order
    pairs: list[tuple[str, str]]  # the (target, precision) cells every model gets


def _names(value: Names) -> list[str]:
    items = value.split(",") if isinstance(value, str) else value
    return list(dict.fromkeys(n.strip() for n in items if n.strip()))


def plan_report(request: ReportRequest) -> ReportPlan:
    """The request validated, before any model is built or any file written."""
    from ..calibration import require_disjoint
    from ..data import list_images
    from ..errors import InvalidValueError, TargetUnavailableError, at_least
    from ..outputs import require_writable_folder
    from ..spec import parse_precisions
    from ..targets import get_target

    r = request
    models, targets = _names(r.models), _names(r.targets)
    for value, flag in ((r.eval_limit, "--eval-limit"), (r.repeats, "--repeats"), (r.workers, "--workers"),
                        (r.shard_size, "--shard-size")):
        at_least(value, 1, flag)
    at_least(r.fallbacks, 0, "--fallbacks")
    if r.workers is not None and r.ray_address:
        raise InvalidValueError("--workers N starts a local Ray for this run and --ray-address (or RAY_ADDRESS) "
                                "uses a running cluster: pass one of them")
    if r.artifact_store is not None:
        if r.workers is None and not r.ray_address:
            raise InvalidValueError("--artifact-store is where Ray workers put the files they convert: "
                                    "pass it with --workers N or --ray-address")
        require_writable_folder(Path(r.artifact_store), "--artifact-store")
    if not models or not targets:
        raise InvalidValueError("nothing to report: name at least one model and one target")
    require_writable_folder(Path(r.out))
    for name in targets:
        reason = get_target(name).unavailable_reason()
        if reason:
            raise TargetUnavailableError(reason)
    precisions = parse_precisions(r.precisions)
    pairs = [(t, p.value) for t in targets for p in precisions if p in get_target(t).precisions]
    if not pairs:
        raise InvalidValueError(f"nothing to report: none of the targets {', '.join(targets)} takes "
                                f"{', '.join(p.value for p in precisions)}")
    if r.eval_data is not None:
        list_images(Path(r.eval_data))                 # every listed image exists: listed, not decoded
    require_disjoint(r.calib_data, r.eval_data)
    if r.arm_cpus:
        from ..emulation import find_emulator
        if all(get_target(t).arm64_unsupported for t in targets):
            raise InvalidValueError(f"--arch arm64: none of {', '.join(targets)} runs on ARM64 here "
                                    "(tflite files do)")
        find_emulator()
    return ReportPlan(r, models, targets, precisions, pairs)
