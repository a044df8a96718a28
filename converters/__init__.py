"""Targets: one module or package per output format, each exposing TARGET.

The core never imports this package: targets are registered as entry points
(`mvdeploy.targets` in pyproject.toml) and reached through `mobilevit_deploy.targets.get_target`.
"""
