"""One module per file format (tflite, mlpackage, onnx): read, describe, rewrite. Converters and runners both use them."""
