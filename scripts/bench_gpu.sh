#!/usr/bin/env bash
# One command for an H100/H200-class machine with CUDA 13 + PyTorch (no TensorRT, no
# onnxruntime-gpu): builds the CUDA extension of plugins/, runs `eventspd-export bench` on the
# kernel benchmark plugins/bench_gpu.py and `eventspd-export bench` on the GPU (hd; K 1..4096;
# fp16 and fp32), and writes every JSON/PNG/log into the folder given as $1.
#
#     scripts/bench_gpu.sh results/h100            # build + benchmarks
#     scripts/bench_gpu.sh results/h100 --tests    # build + `pytest -m gpu` + benchmarks
#
# The model benchmark runs the eager backends (torch, torch-plugins), the CUDA-graph ones
# (torch-cudagraph, torch-plugins-cudagraph) and torch-plugins-compiled (torch.compile + CUDA
# graphs), each against the dense baseline at the same level. Environment overrides:
#   PRECISIONS="fp16 fp32"   BACKENDS=torch,torch-plugins,... (for every precision; default:
#   all five in fp16, all but torch-plugins-compiled in fp32)   KERNELS=1 (0: skip the kernel
#   benchmark)   PROFILE=1 (0: skip the per-stage kernel profiles of scripts/profile_stages.py)
#   PACKED_KV_AB=1 (0: skip the fp16 torch-plugins-cudagraph run with --packed-kv, the A/B of
#   model_def.packed against the same backend in the main fp16 run; about 30 s more, an
#   estimate: this run has not been timed on a GPU yet)
#
# Budget: under 5 minutes (the extension build is most of it). torch is NOT installed or
# upgraded: the Makefile/pyproject pin torch==2.13.0, a CPU build, which would replace the
# machine's CUDA torch; the package is installed with --no-deps and only the few missing
# pure-Python dependencies are added.
set -uo pipefail

OUT="${1:?usage: scripts/bench_gpu.sh OUT_DIR [--tests]}"
TESTS=0
[ "${2:-}" = "--tests" ] && TESTS=1
PRECISIONS="${PRECISIONS:-fp16 fp32}"
# torch-plugins-compiled costs ~2 min of compilation per precision: by default it runs in fp16
# only (the precision of the targets), which keeps the whole script under 5 minutes.
BACKENDS_FP16="${BACKENDS:-torch,torch-plugins,torch-cudagraph,torch-plugins-cudagraph,torch-plugins-compiled}"
BACKENDS_FP32="${BACKENDS:-torch,torch-plugins,torch-cudagraph,torch-plugins-cudagraph}"
KERNELS="${KERNELS:-1}"
PY="${PYTHON:-python}"
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
START=$SECONDS
FAILED=()
step() { echo "== [$((SECONDS - START)) s] $*"; }

step "checking torch and the GPU"
if ! "$PY" - <<'EOF'
import sys, torch
if not torch.cuda.is_available():
    sys.exit(f"error: torch {torch.__version__} sees no CUDA device (built for CUDA {torch.version.cuda})")
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name()}")
EOF
then exit 2; fi

# nvcc: torch's extension builder finds the toolkit through nvcc on PATH or CUDA_HOME.
if ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then
    export PATH="/usr/local/cuda/bin:$PATH"
fi
command -v nvcc >/dev/null 2>&1 || echo "warning: nvcc not found: the extension builds without CUDA kernels and torch-plugins will be skipped"
export MAX_JOBS="${MAX_JOBS:-$(nproc)}"  # parallel nvcc jobs when ninja is present

step "installing build and runtime dependencies that are missing (never torch)"
missing=$("$PY" - <<'EOF'
import importlib.util
# module -> pip requirement (pyproject's ranges; matplotlib for the plot)
need = {"setuptools": "setuptools>=68", "wheel": "wheel", "ninja": "ninja", "numpy": "numpy>=2.0,<3",
        "click": "click>=8.1,<9", "matplotlib": "matplotlib==3.11.2"}
print(" ".join(f"'{req}'" for mod, req in need.items() if importlib.util.find_spec(mod) is None))
EOF
)
if [ -n "$missing" ]; then
    echo "pip install $missing"
    eval "$PY -m pip install --quiet $missing" \
        || echo "warning: could not install $missing (offline?); without matplotlib the PNG is skipped, without ninja the build is serial"
fi

step "building the extension (pip install --no-build-isolation --no-deps -e .)"
if ! "$PY" -m pip install --quiet --no-build-isolation --no-deps -e . >"$OUT/build.log" 2>&1; then
    tail -n 30 "$OUT/build.log"
    echo "error: the package/extension build failed (full log: $OUT/build.log)"
    exit 1
fi
"$PY" -c "import plugins.torch_ext as e; print('plugins._C CUDA kernels:', e.has_cuda_kernels())" \
    || echo "warning: plugins.torch_ext does not import; torch-plugins will be reported as skipped"

if [ "$TESTS" = 1 ]; then
    step "pytest -m gpu (CUDA kernels against the reference ops, whole model plugin vs reference)"
    if ! "$PY" -m pytest -m gpu -q -p no:cacheprovider tests 2>&1 | tee "$OUT/gpu-tests.txt"; then
        FAILED+=("pytest -m gpu")
    fi
fi

if [ "$KERNELS" = 1 ]; then
    step "plugins/bench_gpu.py (kernels against the reference ops)"
    if ! "$PY" -m plugins.bench_gpu "$OUT/kernels-hd.json" --config hd 2>&1 | tee "$OUT/kernels-hd.txt"; then
        FAILED+=("plugins.bench_gpu")
    fi
fi

for prec in $PRECISIONS; do
    if [ "$prec" = fp32 ]; then backends="$BACKENDS_FP32"; else backends="$BACKENDS_FP16"; fi
    step "eventspd-export bench --config hd --device cuda --precision $prec"
    if ! "$PY" -m eventspd_export bench --config hd --device cuda --backends "$backends" \
            --k 1,64,256,1024,4096 --precision "$prec" \
            --json "$OUT/bench-hd-cuda-$prec.json" --plot "$OUT/bench-hd-cuda-$prec.png" \
            2> "$OUT/bench-hd-cuda-$prec.log" | tee "$OUT/bench-hd-cuda-$prec.txt"; then
        tail -n 20 "$OUT/bench-hd-cuda-$prec.log"
        FAILED+=("bench $prec")
    fi
done

if [ "${PACKED_KV_AB:-1}" = 1 ] && [[ " $PRECISIONS " == *" fp16 "* ]]; then
    # A/B of model_def.packed (B2/B5's K/V projections as one GEMM each): the same graphed
    # backend as in the fp16 run above, packed; no dense baseline (that run has it).
    step "eventspd-export bench --packed-kv (torch-plugins-cudagraph, fp16)"
    if ! "$PY" -m eventspd_export bench --config hd --device cuda --backends torch-plugins-cudagraph \
            --k 1,64,256,1024,4096 --precision fp16 --no-dense --no-stages --packed-kv \
            --json "$OUT/bench-hd-cuda-fp16-packed-kv.json" --plot "$OUT/bench-hd-cuda-fp16-packed-kv.png" \
            2> "$OUT/bench-hd-cuda-fp16-packed-kv.log" | tee "$OUT/bench-hd-cuda-fp16-packed-kv.txt"; then
        tail -n 20 "$OUT/bench-hd-cuda-fp16-packed-kv.log"
        FAILED+=("bench packed-kv")
    fi
fi

if [ "${PROFILE:-1}" = 1 ]; then
    # Where the time goes, per stage and kernel (issue 15: stem..L2, the decoder's launches),
    # with the reference ops and with the plugin ops (fused ConvNeXt-V2 blocks), fp16, K=256.
    for ops in reference plugin; do
        step "scripts/profile_stages.py --ops $ops (fp16, hd, K=256)"
        if ! "$PY" scripts/profile_stages.py --config hd --device cuda --precision fp16 --ops "$ops" --k 256 \
                --out "$OUT" 2> "$OUT/profile-$ops-fp16.log" >/dev/null; then
            tail -n 20 "$OUT/profile-$ops-fp16.log"
            FAILED+=("profile $ops")
        fi
    done
fi

step "done; files in $OUT:"
ls -l "$OUT"
if [ ${#FAILED[@]} -gt 0 ]; then
    echo "failed steps: ${FAILED[*]}"
    exit 1
fi
