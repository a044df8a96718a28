"""Targets: one module or package per output format, each exposing TARGET (a package when it has more
than one job: the target, its converter backends, recipes, options).

The core never imports this package: targets are registered as entry points
(`mvdeploy.targets` in pyproject.toml) and reached through `mobilevit_deploy.targets.get_target`.
Named `mvdeploy_targets`, not `converters`: a "converter" is a backend inside a target (the
`--converter` flag: litert-torch | onnx2tf, trace | export).
"""
