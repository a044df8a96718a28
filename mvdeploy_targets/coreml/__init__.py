"""Core ML target: a PyTorch model -> an ML Program `.mlpackage` (a directory).

Precisions (recipes.py):
  fp32, fp16     compute precision of the whole program (inputs and outputs stay float32)
  int8           fp16 program, conv/linear weights int8 linear per-channel
  palettize6/4   fp16 program, conv/linear weights k-means palettized to 6 / 4 bits
  int4           fp16 program, conv/linear weights int4 per-block (iOS 18 only)
  w8a8           experimental: int8 activations (quantize/dequantize pairs) calibrated through the
                 mvdeploy MIL interpreter, plus int8 per-channel weights (iOS 17+)

Only weights are compressed: the configs name the constants feeding the `weight` input of conv and
linear ops, so biases and derived constants (Swin's relative-position bias, masks) stay exact. Tensors under
`weight_threshold` elements (default 2048, coremltools' own default) stay float.

Options (options.py, built with TARGET.options(...)):
  ios           16 | 17 | 18 (default 17): minimum deployment target
  image_input   bool: a Core ML image input (RGB, scale 1/255); the per-channel mean/std of
                `preprocess` are applied inside the model so ImageNet's std is exact
  preprocess    mobilevit_deploy.spec.Preprocess or {"mean": [...], "std": [...]}; required with image_input
  labels        list[str]: a classifier (ct.ClassifierConfig); softmax is applied in the model so the
                probabilities are probabilities, and the raw logits stay an output
  metadata      dict: author, license, version, short_description go to the model's own fields;
                every other key (weights source, preprocessing, ...) to user_defined_metadata
  weight_threshold  int: smallest weight tensor (elements) that gets compressed
  block_size    int: int4 block size along the input channels (default 32)

The pieces: options (CoreMLOptions), wrappers (what gets converted), frontends (trace / export and
ct.convert), recipes (precisions), metadata (what the package says about itself), target (CoreMLTarget).
Reading any .mlpackage is mobilevit_deploy.formats.mlpackage; running one is mobilevit_deploy.runners.coreml.
"""
from .options import CoreMLOptions
from .target import TARGET, CoreMLTarget

__all__ = ["TARGET", "CoreMLTarget", "CoreMLOptions"]
