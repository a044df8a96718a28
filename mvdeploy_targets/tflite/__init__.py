"""The TFLite target as a package: target.py (the Target), litert_torch.py and onnx2tf.py (the two
converter backends, each with its precision table). Both validate and count calibration batches with
mobilevit_deploy/quantization/calibrate.py, which every calibrating converter shares; the .tflite file
format itself is read and rewritten in mobilevit_deploy/formats/tflite.py."""
from .target import TARGET, TFLiteOptions, TFLiteTarget

__all__ = ["TARGET", "TFLiteTarget", "TFLiteOptions"]
