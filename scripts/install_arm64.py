"""Install the ARM64 engine into the project's environment: `python scripts/install_arm64.py .venv/arm64`.

What `mvdeploy check --arch arm64` runs (mobilevit_deploy/emulation.py reads this layout):

    <root>/qemu-aarch64     qemu's user-mode emulator, 10.x (a static binary; 7.2 crashes ai-edge-litert)
    <root>/sysroot/         an aarch64 Debian userland: python3.11 and the shared libraries it loads
    <root>/site/            aarch64 wheels unpacked (ai-edge-litert and what it imports), its PYTHONPATH
    <root>/installed.json   what was installed, with versions (written last: its presence means complete)

Everything comes from Debian's package archive (apt-get with a private configuration: no root, nothing
in system paths) and from PyPI (`pip download --platform manylinux_2_27_aarch64`), at install time only.
The wheels' versions are the ones constraints.txt pins for the host, so both builds are the same release.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ARCHIVE = "http://deb.debian.org/debian"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
QEMU = "qemu-user/bookworm-backports"       # 1:10.0.2 when written; bookworm's own 7.2 crashes the interpreter
QEMU_MAJOR_AT_LEAST = 10
# python3.11 and every library it or the wheels load (apt-cache depends of the python3.11 packages).
SYSROOT_PACKAGES = (
    "python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib", "libc6", "libstdc++6", "libgcc-s1",
    "zlib1g", "libffi8", "libssl3", "libexpat1", "libbz2-1.0", "liblzma5", "libsqlite3-0", "libncursesw6",
    "libtinfo6", "libreadline8", "libuuid1", "libcrypt1", "libdb5.3", "libnsl2", "libtirpc3",
    "libgssapi-krb5-2", "libkrb5-3", "libk5crypto3", "libkrb5support0", "libcom-err2", "libkeyutils1",
)
# The engine and what it imports, at the versions constraints.txt pins for the host.
WHEELS = ("ai-edge-litert", "numpy", "flatbuffers", "protobuf", "ml_dtypes", "tqdm", "backports.strenum",
          "typing-extensions")
PLATFORM = "manylinux_2_27_aarch64"


def main(root: Path) -> None:
    root = root.resolve()
    if (root / "installed.json").exists():
        print(f"ARM64 engine already in {root}")
        return
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    with tempfile.TemporaryDirectory() as tmp:
        apt = _apt_options(Path(tmp))
        _run(["apt-get", *apt, "update"], "reading Debian's package lists (amd64 + arm64)")
        debs = Path(tmp) / "debs"
        debs.mkdir()
        _run(["apt-get", *apt, "download", QEMU, *(f"{p}:arm64" for p in SYSROOT_PACKAGES)],
             "downloading qemu-user and the aarch64 userland", cwd=debs)
        sysroot = root / "sysroot"
        qemu_tree = Path(tmp) / "qemu"
        for deb in sorted(debs.glob("*.deb")):
            _run(["dpkg-deb", "-x", str(deb), str(qemu_tree if deb.name.startswith("qemu-user_") else sysroot)])
        shutil.copy2(qemu_tree / "usr/bin/qemu-aarch64", root / "qemu-aarch64")
    qemu_version = _qemu_version(root / "qemu-aarch64")
    wheels = _download_wheels(root)
    python = subprocess.run([str(root / "qemu-aarch64"), "-L", str(root / "sysroot"),
                             str(root / "sysroot/usr/bin/python3.11"), "-c",
                             "import platform, numpy, ai_edge_litert.interpreter; print(platform.machine())"],
                            env={"PYTHONPATH": str(root / "site")}, capture_output=True, text=True)
    if python.returncode != 0 or python.stdout.strip() != "aarch64":
        sys.exit(f"the emulated Python does not run ai-edge-litert: {python.stderr.strip()[-400:]}")
    (root / "installed.json").write_text(json.dumps(
        {"qemu": qemu_version, "python": "3.11 (Debian bookworm, arm64)", "wheels": wheels}, indent=2) + "\n")
    print(f"ARM64 engine installed in {root} (qemu-aarch64 {qemu_version}; "
          + ", ".join(f"{k} {v}" for k, v in wheels.items()) + ")")


def _apt_options(tmp: Path) -> list[str]:
    """apt-get on a private state folder that knows amd64 and arm64 (the system's apt is untouched)."""
    (tmp / "lists/partial").mkdir(parents=True)
    (tmp / "cache/archives/partial").mkdir(parents=True)
    sources = tmp / "sources.list"
    sources.write_text("".join(f"deb [arch=amd64,arm64 signed-by={KEYRING}] {ARCHIVE} {suite} main\n"
                               for suite in ("bookworm", "bookworm-backports")))
    return ["-q", "-o", f"Dir::Etc::SourceList={sources}", "-o", "Dir::Etc::SourceParts=/dev/null",
            "-o", f"Dir::State::Lists={tmp / 'lists'}", "-o", f"Dir::Cache={tmp / 'cache'}",
            "-o", "APT::Architectures::=amd64", "-o", "APT::Architectures::=arm64",
            "-o", "Debug::NoLocking=1", "-o", "APT::Sandbox::User=root"]


def _qemu_version(qemu: Path) -> str:
    text = subprocess.run([str(qemu), "--version"], capture_output=True, text=True, check=True).stdout
    version = re.search(r"version (\d+)\.(\d+)\.(\d+)", text)
    if version is None or int(version.group(1)) < QEMU_MAJOR_AT_LEAST:
        sys.exit(f"qemu-aarch64 {version.group(0) if version else '?'} is too old: ai-edge-litert needs "
                 f"{QEMU_MAJOR_AT_LEAST}.x (from bookworm-backports)")
    return ".".join(version.groups())


def _download_wheels(root: Path) -> dict[str, str]:
    """The aarch64 wheels at the host's pinned versions, unpacked into <root>/site. -> {name: version}"""
    pins = _pins(Path(__file__).resolve().parents[1] / "constraints.txt")
    wanted = [f"{name}=={pins[_canonical(name)]}" if _canonical(name) in pins else name for name in WHEELS]
    with tempfile.TemporaryDirectory() as tmp:
        _run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
              "--platform", PLATFORM, "--python-version", "3.11", "-d", tmp, *wanted],
             f"downloading aarch64 wheels ({', '.join(wanted)})")
        versions = {}
        for wheel in sorted(Path(tmp).glob("*.whl")):
            with zipfile.ZipFile(wheel) as archive:
                archive.extractall(root / "site")
            name, version = wheel.name.split("-")[:2]
            versions[name] = version
    return versions


def _pins(constraints: Path) -> dict[str, str]:
    pins = {}
    for line in constraints.read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            pins[_canonical(name)] = version.strip()
    return pins


def _canonical(name: str) -> str:
    """A distribution name as pip compares them (PEP 503): typing_extensions == typing-extensions."""
    return re.sub(r"[-_.]+", "-", name.strip().lower())


def _run(command: list[str], what: str | None = None, cwd: Path | None = None) -> None:
    if what:
        print(f"  {what}...", flush=True)
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command[:3])} failed: {done.stderr.strip()[-600:]}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python scripts/install_arm64.py ROOT")
    main(Path(sys.argv[1]))
