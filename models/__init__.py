"""Model specs, loading, our Llama-family model and the torch and ONNX Runtime backends."""

import os

# onnxruntime (1.32 on Linux) starts its telemetry when imported: it writes a device id and
# an event store under ~/.cache/Microsoft and may send events. A local completion server does
# neither; set before any import of onnxruntime (a user's own setting wins).
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
