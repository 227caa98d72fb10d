"""Export a trained model to one self-describing file (ONNX, optionally int8) with a parity check."""
