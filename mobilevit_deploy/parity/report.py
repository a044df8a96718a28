"""The parity report: what was compared, how, and whether it passed. Written as <artifact>.parity.json."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .compare import Metrics
from .tolerances import Tolerance


@dataclass
class ParityReport:
    artifact: str                 # path of the checked file
    target: str
    precision: str
    reference: str                # what produced the expected outputs (e.g. "torch 2.13.0 eager CPU, mobilevit_xxs unfused")
    engine: str                   # what ran the artifact
    samples: dict                 # {"synthetic": n, "real": n, "source": path or None}
    metrics: Metrics | None       # None when the artifact could not run at all
    tolerance: Tolerance
    failures: list[str]
    weights: str                  # a path, or "random"
    notes: list[str] = field(default_factory=list)
    integrity: dict | None = None  # the file against its replica: reference, metrics, tolerance, failures (or why not)
    audit: dict | None = None      # the weight audit (parity.audit.Audit.to_dict)
    recipe: dict | None = None     # how the file was made, for a later check: converter, calibration record
    arm64: list[dict] | None = None  # the same comparison on the engine's ARM64 build, one row per emulated CPU

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict:
        return {
            "artifact": self.artifact, "target": self.target, "precision": self.precision,
            "reference": self.reference, "engine": self.engine, "samples": self.samples,
            "passed": self.passed, "metrics": self.metrics.to_dict() if self.metrics else None,
            "tolerance": self.tolerance.to_dict(), "failures": self.failures,
            "weights": self.weights, "notes": self.notes,
            "integrity": self.integrity, "audit": self.audit, "recipe": self.recipe, "arm64": self.arm64,
        }

    def proof_lines(self) -> list[str]:
        """What the integrity comparison and the weight audit found, one line each, for the terminal."""
        lines = []
        if self.integrity is not None:
            if self.integrity.get("checked"):
                m, bound = self.integrity["metrics"], self.integrity["tolerance"]
                verdict = "FAIL" if self.integrity["failures"] else "pass"
                lines.append(f"integrity {verdict}: against {self.integrity['reference']}: max_rel {m['max_rel']:.3g}, "
                             f"cosine_min {m['cosine_min']:.6f}, SQNR {m['sqnr_db']:.1f} dB (bound {_bound(bound)})")
            else:
                lines.append(f"integrity not checked: {self.integrity['why']}")
        if self.audit is not None:
            a = self.audit
            lines.append(f"weights not audited: {a['why']}" if not a.get("read") else
                         f"weights {'FAIL' if a['failures'] else 'pass'}: {a['matched']} of {a['stored']} stored tensors "
                         f"matched to the model's parameters, {len(a['failures'])} outside their rounding bound; "
                         f"{a['unmatched']} unmatched (constants the converter computed)")
        return lines + _arm64_lines(self.arm64 or [])

    def write(self, path: Path) -> Path:
        from ..outputs import write_text_atomic
        write_text_atomic(Path(path), json.dumps(self.to_dict(), indent=2) + "\n")
        return Path(path)


def _arm64_lines(rows: list[dict]) -> list[str]:
    """One terminal line per profile."""
    lines = []
    for row in rows:
        verdict = "FAIL" if row["failures"] else "pass"
        if row["metrics"] is None:
            lines.append(f"arm64 {row['profile']} {verdict}: {row['failures'][0]}")
            continue
        m, host = row["metrics"], row["vs_host"]
        lines.append(f"arm64 {row['profile']} {verdict}: max_rel {m['max_rel']:.3g}, cosine_min {m['cosine_min']:.6f}, "
                     f"top-1 {m['top1_agreement']:.3f} against PyTorch on {row['images']} images; x86-vs-ARM max_rel "
                     f"{host['max_rel']:.3g} (emulated {row['machine']}, check took {row['check_seconds']:.0f} s)")
    return lines


def _bound(tolerance: dict) -> str:
    names = {"max_rel": "max_rel <=", "cosine_min": "cosine >=", "sqnr_db": "SQNR >=", "top1_agreement": "top-1 >="}
    return ", ".join(f"{names[k]} {v:g}" for k, v in tolerance.items())


def parity_path(artifact: Path) -> Path:
    """<artifact>.parity.json beside the artifact."""
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + ".parity.json")


def recorded_recipe(artifact: Path) -> dict | None:
    """How mvdeploy made the file (converter, calibration), from the parity report beside it; None when
    there is none or it does not say."""
    try:
        recipe = json.loads(parity_path(Path(artifact)).read_text()).get("recipe")
    except (OSError, ValueError, AttributeError):
        return None
    return recipe if isinstance(recipe, dict) else None


def declared_precision(artifact: Path) -> str | None:
    """The precision a file was made as, by what mvdeploy wrote about it: its parity report's, else the
    one its name carries (`<model>-<precision>[-<converter>]<suffix>`); None when neither says. For
    formats whose tensors cannot tell two recipes apart (TFLite int8 and int8-static)."""
    from ..spec import Precision

    artifact = Path(artifact)
    try:
        said = json.loads(parity_path(artifact).read_text()).get("precision")
    except (OSError, ValueError, AttributeError):
        said = None
    if said in {p.value for p in Precision}:
        return said
    name = artifact.name[:-len(artifact.suffix)] if artifact.suffix else artifact.name
    for value in sorted((p.value for p in Precision), key=len, reverse=True):     # int8-static before int8
        if name.endswith(f"-{value}") or f"-{value}-" in name:
            return value
    return None
