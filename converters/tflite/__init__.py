"""The TFLite target as a package: target.py (the Target), litert_torch.py and onnx2tf.py (the two
backends, each with its precision table), calibration.py (what both backends check of calibration
images). The .tflite file format itself is read and rewritten in mobilevit_deploy/formats/tflite.py."""
from .target import TARGET, TFLiteOptions, TFLiteTarget

__all__ = ["TARGET", "TFLiteTarget", "TFLiteOptions"]
