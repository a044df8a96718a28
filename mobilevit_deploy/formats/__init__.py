"""One module per file format (tflite, mlpackage, onnx, pte): read, describe, rewrite; flatbuffer.py holds
what .tflite and .pte share. Targets and runners both use them."""
