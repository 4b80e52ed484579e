#!/usr/bin/env bash
# Every benchmark on onnxruntime's CUDA execution provider (--device cuda): ratios and absolute times.
#
#   bash benchmarks/gpu.sh              # ResNet-18 and VGG-16 at 224 (a few minutes; most of it is building)
#   QUICK=1 bash benchmarks/gpu.sh      # size 64: a smoke run
#   PYTHON=/path/to/python bash benchmarks/gpu.sh
#
# Needs onnxruntime-gpu whose CUDA provider really loads (CUDA 13, cuDNN 9); on any other machine it stops
# at once with a message and exit code 2. cuDNN's algorithm search is HEURISTIC unless
# ONNXPLAIN_CUDNN_ALGO_SEARCH=EXHAUSTIVE is set (see onnxplain/runtime.py: cuda_provider_options).
# Left out on the GPU: bench_api's "memory" section (ru_maxrss is host memory, not the device's) and its
# "peers" (the pinned torch is a CPU wheel: a GPU-vs-CPU ratio says nothing).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3

if ! "$PY" - <<'EOF'
import sys
try:
    import onnxruntime as ort
    from onnxplain import runtime
    from onnxplain.errors import OnnxplainError
except Exception as exc:  # noqa: BLE001
    print(f"gpu.sh: cannot import onnxplain/onnxruntime with {sys.executable}: {exc}", file=sys.stderr)
    sys.exit(1)
try:
    runtime.providers_for("cuda")
except OnnxplainError as exc:
    print(f"gpu.sh: no usable CUDA here — {exc}. onnxruntime {ort.__version__} offers "
          f"{', '.join(ort.get_available_providers())}. Run this script on a machine with an NVIDIA GPU.",
          file=sys.stderr)
    sys.exit(1)
print(f"onnxruntime {ort.__version__}: CUDAExecutionProvider loads; options {runtime.cuda_provider_options()}")
EOF
then
    exit 2
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

if [ -n "${QUICK:-}" ]; then
    SIZE=64; API=(--quick); EXPL=(--size 64 --batch 1,16 --budget 3); PAT=(--size 64 --width 0.5)
else
    SIZE=224; API=(); EXPL=(--size 224 --batch 1,16 --budget 5); PAT=(--size 224 --width 1.0)
fi
failed=0
run() {
    echo
    echo "=== $* ==="
    local t0=$SECONDS
    "$PY" "$@"
    local rc=$?
    echo "=== exit $rc after $((SECONDS - t0)) s ==="
    [ $rc -eq 0 ] || failed=$((failed + 1))
}
run benchmarks/bench_api.py --device cuda --size "$SIZE" --sections methods,multiclass,ig,setup,fit "${API[@]}"
run benchmarks/bench_explainer.py --device cuda "${EXPL[@]}" \
    --methods gradient,input_t_gradient,guided_backprop,lrp.epsilon_plus_flat,lrp.epsilon_gamma_box
run benchmarks/bench_sampling.py --device cuda
run benchmarks/bench_patterns.py --device cuda "${PAT[@]}"
echo
echo "gpu.sh: $failed benchmark(s) failed"
exit $((failed > 0))
