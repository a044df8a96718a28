"""The house rules, enforced: layers point one way and no module imports itself back through others.

The core (`mobilevit_deploy`) never imports `mvdeploy_targets` or `apps` (targets are plugins found
through entry points); `mvdeploy_targets` never imports `apps`; the CLI (`mobilevit_deploy/cli.py`) is the one
composition root allowed to reach every layer. Imports inside functions count too.
"""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("mobilevit_deploy", "mvdeploy_targets", "apps")
COMPOSITION_ROOT = "mobilevit_deploy.cli"
# layer -> the top-level packages it may not import
FORBIDDEN = {"mobilevit_deploy": {"mvdeploy_targets", "apps"}, "mvdeploy_targets": {"apps"}, "apps": set()}


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Modules of ours that `name` imports, anywhere in the file, resolved to module names."""
    is_package = path.name == "__init__.py"
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            candidates = [f"{module}.{alias.name}" for alias in node.names] + [module]
        else:
            continue
        for candidate in candidates:
            parts = candidate.split(".")
            while parts and ".".join(parts) not in known:
                parts.pop()
            if parts and parts[0] in PACKAGES:
                out.add(".".join(parts))
                if not isinstance(node, ast.ImportFrom):
                    continue
                break                       # `from m import x`: x itself when it is a module, else m
    out.discard(name)
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(name, path, known) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles():
    assert _cycles(_graph()) == []


def _wrong_arrows(graph: dict[str, set[str]]) -> list[str]:
    wrong = []
    for module, imported in sorted(graph.items()):
        if module == COMPOSITION_ROOT:
            continue
        layer = module.split(".")[0]
        wrong += [f"{module} -> {other}" for other in sorted(imported) if other.split(".")[0] in FORBIDDEN[layer]]
    return wrong


def test_layers_point_one_way():
    assert _wrong_arrows(_graph()) == []


def test_the_rules_see_a_cycle_and_a_wrong_arrow():
    """Negative control: the rules above fail on a graph that has what they forbid, and the
    resolver really follows relative, absolute and in-function imports."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _wrong_arrows({"mobilevit_deploy.pipeline": {"mvdeploy_targets.onnx"},
                          "mvdeploy_targets.onnx": {"apps.bundle"}, COMPOSITION_ROOT: {"apps.bundle"}}) == [
        "mobilevit_deploy.pipeline -> mvdeploy_targets.onnx", "mvdeploy_targets.onnx -> apps.bundle"]
    graph = _graph()
    assert "mobilevit_deploy.targets" in graph["mobilevit_deploy.pipeline"]          # relative
    assert "mobilevit_deploy.targets" in graph["mvdeploy_targets.onnx"]              # absolute
    assert "apps.bundle" in graph[COMPOSITION_ROOT]                                  # inside a function


def test_targets_come_from_entry_points():
    from mobilevit_deploy.targets import registry
    assert {"onnx", "tflite", "coreml"} <= set(registry())


def test_import_and_help_stay_light():
    """`import mobilevit_deploy` pulls in neither torch nor any target or converter toolchain."""
    code = ("import sys, mobilevit_deploy as m; print(m.__version__); "
            "print(sorted(k for k in ('torch', 'tensorflow', 'coremltools', 'onnx', 'mvdeploy_targets') if k in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0] and out[0] != "0+unknown"
    assert out[1] == "[]"


def test_worker_scripts_need_only_numpy():
    """A worker script runs under any Python with numpy (an emulated aarch64 one too): importing it pulls
    in numpy, the standard library and our own numpy-only modules, nothing else. Negative control: the
    same check sees typer once it is imported."""
    code = ("import sys; before = set(sys.modules)\n"
            "def foreign(): return sorted({k.split('.')[0] for k in set(sys.modules) - before}"
            " - set(sys.stdlib_module_names) - {'numpy', 'mobilevit_deploy'})\n"
            "import mobilevit_deploy.runners.litert_worker, mobilevit_deploy.runners.executorch_worker\n"
            "print(foreign()); import typer; print(foreign())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0] == "[]"
    assert "typer" in out[1]


def test_readme_python_api_example_runs_as_written(tmp_path):
    """The README's Python API block, run as a user would paste it (in a fresh folder)."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Python API"):text.index("## Layout")]
    blocks = [part.split("```")[0] for part in section.split("```python")[1:]]
    assert len(blocks) == 2                                   # a built-in model, and a user's own module
    result = subprocess.run([sys.executable, "-c", "\n".join(blocks)], capture_output=True, text=True, cwd=tmp_path,
                            timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("parity passed: True") == 2
    assert "tinynet-int8.tflite parity passed: True" in result.stdout
    assert "refused: target onnx has no option 'ios'" in result.stdout
    assert (tmp_path / "mvdeploy-out" / "api" / "mobilevit_xxs-fp32.onnx.parity.json").is_file()


def test_api_strict_check_raises_parity_error(tmp_path):
    """Negative control: a file made from other weights fails; strict=True turns that into ParityError."""
    import mobilevit_deploy as mvd

    result = mvd.convert("mobilevit_xxs", target="onnx", weights="random", num_classes=10, image_size=64,
                         out=tmp_path)
    assert result.report.passed                                   # random weights against themselves
    assert not mvd.check(result.artifact.path, model="mobilevit_xxs").passed   # vs the digits checkpoint
    with pytest.raises(mvd.ParityError, match="parity failed"):
        mvd.check(result.artifact.path, model="mobilevit_xxs", strict=True)


COMMAND_LINES = 35      # a command's body: parse what the options left, one library call, render


def command_lengths(source: str) -> dict[str, int]:
    """Lines of each `@app.command` function's body (docstring to end): the signature is the option
    declarations, the body is what the command does."""
    tree = ast.parse(source)
    return {node.name: node.end_lineno - node.body[0].lineno + 1 for node in tree.body
            if isinstance(node, ast.FunctionDef) and any("command" in ast.unparse(d) for d in node.decorator_list)}


def test_every_cli_command_is_thin():
    lengths = command_lengths((ROOT / "mobilevit_deploy" / "cli.py").read_text())
    assert {"convert", "check", "report", "bundle", "verify", "debug", "bench"} <= set(lengths)
    assert {name: n for name, n in lengths.items() if n > COMMAND_LINES} == {}
    fat = "import typer\napp = typer.Typer()\n@app.command()\ndef fat():\n" + "    x = 1\n" * (COMMAND_LINES + 1)
    assert command_lengths(fat) == {"fat": COMMAND_LINES + 1}          # it would notice one that holds policy
