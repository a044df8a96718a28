"""bundle.json: everything an app needs to feed the model and to test itself, with checksums.

The schema is validated field by field (no third-party validator): a missing or mistyped field is one
readable line.
"""
from __future__ import annotations

import hashlib
from pathlib import Path, PurePosixPath

SCHEMA_VERSION = 1
MANIFEST = "bundle.json"

# field path -> type(s) it must have. Dotted paths reach into objects.
SCHEMA: dict[str, type | tuple[type, ...]] = {
    "schema_version": int,
    "platform": str,
    "model": dict,
    "model.name": str,
    "model.weights": str,
    "model.file": str,
    "model.target": str,
    "model.precision": str,
    "input": dict,
    "input.name": str,
    "input.shape": list,
    "input.layout": str,
    "input.dtype": str,
    "preprocessing": dict,
    "preprocessing.resize": int,
    "preprocessing.crop": int,
    "preprocessing.color_order": str,
    "preprocessing.scale": float,
    "preprocessing.mean": list,
    "preprocessing.std": list,
    "output": dict,
    "output.name": str,
    "output.shape": list,
    "output.dtype": str,
    "labels": str,
    "files": dict,
    "golden": dict,
    "golden.cases": list,
    "golden.tolerance": dict,
    "parity": dict,
    "parity.passed": bool,
    "tools": dict,
}


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def bundle_files(root: Path) -> list[Path]:
    """Every regular file under root except the top-level manifest, as sorted relative paths."""
    return sorted(p.relative_to(root) for p in root.rglob("*")
                  if p.is_file() and p.relative_to(root) != Path(MANIFEST))


def checksums(root: Path) -> dict[str, str]:
    return {p.as_posix(): sha256(root / p) for p in bundle_files(root)}


def schema_failures(manifest: dict) -> list[str]:
    failures = []
    for path, kind in SCHEMA.items():
        node, ok = manifest, True
        for part in path.split("."):
            if not isinstance(node, dict) or part not in node:
                failures.append(f"bundle.json: missing field '{path}'")
                ok = False
                break
            node = node[part]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if ok and (not isinstance(node, kind) or (isinstance(node, bool) and bool not in kinds)):
            name = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
            failures.append(f"bundle.json: field '{path}' should be {name}, is {type(node).__name__}")
    if not failures and manifest["schema_version"] != SCHEMA_VERSION:
        failures.append(f"bundle.json: schema_version {manifest['schema_version']} is not {SCHEMA_VERSION}")
    if not failures:
        failures += [f"bundle.json: {where} '{value}' {problem}" for where, value in _paths(manifest)
                     for problem in [_path_problem(value)] if problem]
    return failures


def _paths(manifest: dict) -> list[tuple[str, object]]:
    """Every field that names a file inside the bundle."""
    found = [("model.file", manifest["model"]["file"]), ("labels", manifest["labels"])]
    for i, case in enumerate(manifest["golden"]["cases"]):
        if not isinstance(case, dict):
            found.append((f"golden.cases[{i}]", case))
            continue
        found += [(f"golden.cases[{i}].{key}", case.get(key)) for key in ("image", "input", "expected")]
    found += [("files key", rel) for rel in manifest["files"]]
    return found


def _path_problem(value) -> str | None:
    """Why a manifest path is not a safe relative path inside the bundle (None when it is)."""
    if not isinstance(value, str) or not value:
        return "is not a relative path"
    path = PurePosixPath(value.replace("\\", "/"))
    if path.is_absolute() or ":" in path.parts[0]:
        return "is an absolute path: bundle paths must be relative"
    if ".." in path.parts:
        return "points outside the bundle ('..')"
    return None
