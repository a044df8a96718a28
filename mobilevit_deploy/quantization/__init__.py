"""Quantization reports: the request (request.py), the run (run.py) and its schedule of tasks (schedule.py,
cells.py), evaluation (evaluate.py), latency (latency.py), per-layer int8 error (layers.py), what to ship
(recommend.py), the report's data (report.py); and calibrate.py, the calibration helpers every converter shares."""
