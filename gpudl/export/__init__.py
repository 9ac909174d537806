"""Export of gpudl models to other formats: ONNX (``gd.export_onnx``, needs ``gpudl[onnx]``).

Importing this package does not import onnx; :func:`export_onnx` does, when called.
"""

from gpudl.export.onnx import OPSET, export_onnx, trace_to_onnx

__all__ = ["OPSET", "export_onnx", "trace_to_onnx"]
