# One command each: make install | make demo | make test | make test-unit | make test-slow | make bench
PY := .venv/bin/python
STAMP := .venv/.installed
ARM64 := .venv/arm64/installed.json
KOTLINC := .venv/kotlin/node_modules/kotlin-compiler/bin/kotlinc
UV := .venv/bin/uv
UV_VERSION := 0.13.9
# The ARM64 engine and the Kotlin compiler download side by side once the venv is there.
MAKEFLAGS += --jobs=2
# Python caches what it compiles (__pycache__) unless told not to: pip skips byte-compiling the 30k files of
# the venv (--no-compile below, about 90 s), so each module is compiled once, when a run first imports it.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: install demo test test-unit test-slow bench clean

install: $(STAMP) $(ARM64) $(KOTLINC)

# Every extra of pyproject.toml (each target's toolchain, Ray, transformers) and the suite's own (dev), at the
# versions constraints.txt pins; torch==2.13.0 is the CPU wheel. onnx2tf's own pins clash with the rest, so it
# goes in without its dependencies, on top of what it really needs (the onnx2tf extra).
# uv installs the same versions as pip in a quarter of the time (here 16 s against 80 s; `uv pip freeze` lists
# the same set); it does not read pip's configuration, so pip's find-links (where a machine keeps a wheel such
# as torch's CPU build) are passed on. Where uv cannot be had, pip does the same install.
$(STAMP): constraints.txt pyproject.toml
	python3.11 -m venv .venv || python3 -m venv .venv
	($(PY) -m pip install -q uv==$(UV_VERSION) && \
	    links="$$PIP_FIND_LINKS $$($(PY) -m pip config get global.find-links 2>/dev/null)" && \
	    $(UV) pip install -q --python $(PY) $$(for l in $$links; do echo --find-links $$l; done) \
	    -e ".[all,dev]" -c constraints.txt && $(UV) pip install -q --python $(PY) --no-deps onnx2tf==1.29.24) || \
	($(PY) -m pip install -q --no-compile -e ".[all,dev]" -c constraints.txt && \
	    $(PY) -m pip install -q --no-compile --no-deps onnx2tf==1.29.24)
	touch $(STAMP)

# The ARM64 engine for --arch arm64 (qemu-user 10.x, an aarch64 Python, ai-edge-litert's aarch64 wheel):
# from Debian's archive and PyPI at install time, into .venv/arm64 (175 MB; nothing in system paths).
$(ARM64): scripts/install_arm64.py constraints.txt | $(STAMP)
	rm -rf .venv/arm64
	$(PY) scripts/install_arm64.py .venv/arm64

# The Kotlin compiler (npm's kotlin-compiler is the full JVM distribution, 94 MB; the JDK is the machine's):
# tests compile the Android apps' own preprocessing and run it on the JVM.
$(KOTLINC): | $(STAMP)
	npm install --prefix .venv/kotlin --no-audit --no-fund --silent kotlin-compiler@2.4.20

demo: install
	.venv/bin/mvdeploy convert --target tflite --precision fp32,fp16,int8

# Two workers, one per core: each test file runs whole on one worker (its module fixtures built once),
# the matrix's cases are spread over both (tests/conftest.py: its scheduler), converted files are shared.
test: install
	$(PY) -m pytest -q -n 2 --durations=15

test-unit: install
	$(PY) -m pytest -q -m unit

test-slow: install
	$(PY) -m pytest -q -n 2 -m slow

bench: install
	$(PY) benchmarks/fusion_latency.py
	$(PY) benchmarks/runtime_latency.py
	$(PY) benchmarks/tflite_latency.py
	$(PY) benchmarks/int8_recipes.py
	$(PY) benchmarks/int8_profile.py
	$(PY) benchmarks/executorch_vs_litert.py
	$(PY) benchmarks/debug_vs_check.py
	$(PY) benchmarks/report_scale.py

clean:
	rm -rf mvdeploy-out .pytest_cache
