"""Quantization reports: evaluate artifacts on real images, per-layer error, the report model."""
