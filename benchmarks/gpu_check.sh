#!/bin/bash
# The GPU check, in one go: the GPU tests (torch on CUDA, onnxruntime-gpu with the cache on
# the GPU), the CUDA benchmark, `draftls complete` on both backends, and the real-model
# server test (device auto: the GPU). Needs a CUDA build of torch and onnxruntime-gpu
# (pip install -e ".[gpu,dev]" in a venv whose torch is a CUDA build).
#
#   bash benchmarks/gpu_check.sh [OUTDIR]        # PYTHON=... to pick the interpreter
set -u
PY=${PYTHON:-.venv/bin/python}
OUT=${1:-benchmarks/out/gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
$PY -c "import torch, onnxruntime as o; print(torch.__version__, torch.cuda.is_available(), o.__version__, o.get_available_providers())"
echo "== GPU tests"
timeout 600 $PY -m pytest -q -p no:cacheprovider -m gpu -rs tests/unit/models/test_cuda.py tests/unit/models/test_onnx.py \
  > "$OUT/gpu_tests.log" 2>&1
tail -5 "$OUT/gpu_tests.log"
echo "== benchmark"
timeout 600 $PY benchmarks/bench_backends.py --device cuda --repeats 3 > "$OUT/bench_cuda.md" 2> "$OUT/bench.err"
cat "$OUT/bench_cuda.md"
echo "== draftls complete"
for b in "--backend torch --device cuda" "--backend onnx --device cuda"; do
  echo "### draftls complete $b"
  timeout 300 $PY -m lsp.cli complete examples/sample.py --line 14 --character 4 --drafts 3 $b 2>&1
done | tee "$OUT/complete.txt"
echo "== the server with the real model"
timeout 600 $PY -m pytest -q -p no:cacheprovider tests/e2e/test_server_real_model.py > "$OUT/e2e.log" 2>&1
tail -3 "$OUT/e2e.log"
