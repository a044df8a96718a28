"""Where an exported file departs from PyTorch: per-module alignment of intermediate values.

`capture` gets intermediates (PyTorch hooks; onnxruntime, LiteRT, the MIL interpreter), `align`
pairs artifact tensors with modules (names carried through, else op kind + shape + order), `report`
holds the per-layer metrics and renders JSON and HTML, `run.debug_file` is the job.
"""
