#!/usr/bin/env bash
# One command for an H100/H200-class machine with CUDA 13 + PyTorch (no TensorRT, no
# onnxruntime-gpu): builds the CUDA extension of plugins/, runs `eventspd-export bench` on the
# kernel benchmark plugins/bench_gpu.py and `eventspd-export bench` on the GPU (hd; K 1..4096;
# fp16 and fp32), and writes every JSON/PNG/log into the folder given as $1.
#
#     scripts/bench_gpu.sh results/h100            # build + benchmarks
#     scripts/bench_gpu.sh results/h100 --tests    # build + `pytest -m gpu` + benchmarks
#     BUDGET_S=480 scripts/bench_gpu.sh results/h200-x --tests --pack /somewhere/h200-x.tgz
#
# --pack FILE: after every step, the output folder (less the chrome traces) is packed into FILE,
# so what the finished steps wrote is in it even if the whole command is killed later (a step
# killed at its limit leaves only what it printed). OUT_DIR and FILE are taken relative to the
# repository root. A step may run 5 s past its share (`timeout -k 5`). BUDGET_S (seconds, 0 = none):
# every step runs under `timeout` with what is left of it, and a step that cannot get its
# minimum is skipped and named at the end. The steps run in order of what the issue needs
# most: build, GPU tests (at most PYTEST_S, 180), kernels, fp16 eager + CUDA graphs, fp16
# compiled, --packed-kv A/B, profiles, fp32. One CUDA fault in a step loses only that step: each
# is its own process, the reference backends run before the plugin ones in each bench, and
# the kernel benchmark writes the rows it measured before a failure.
#
# The model benchmark runs the eager backends (torch, torch-plugins), the CUDA-graph ones
# (torch-cudagraph, torch-plugins-cudagraph) and torch-plugins-compiled (torch.compile + CUDA
# graphs), each against the dense baseline at the same level. Environment overrides:
#   PRECISIONS="fp16 fp32"   BACKENDS=torch,torch-plugins,... (for every precision; default:
#   the four eager and graphed ones; torch-plugins-compiled runs as a step of its own, fp16 only,
#   COMPILED=0 skips it)   KERNELS=1 (0: skip the kernel
#   benchmark)   PROFILE=1 (0: skip the per-stage kernel profiles of scripts/profile_stages.py)
#   PACKED_KV_AB=1 (0: skip the fp16 torch-plugins-cudagraph run with --packed-kv, the A/B of
#   model_def.packed against the same backend in the main fp16 run; about 30 s more, an
#   estimate: this run has not been timed on a GPU yet)
#
# Time: 139 s on an H200 for the build, the GPU tests of then, the kernels and fp16 + fp32 without the
# compiled backend (2026-11-26); with the compiled backend (about 2 min), the packed-kv A/B, the
# profiles and today's 70 GPU tests an estimate of 6-8 minutes: on a lent machine with a fixed
# allowance, give BUDGET_S and --pack. torch is NOT installed or upgraded: the Makefile/pyproject
# pin torch==2.13.0, a CPU build, which would replace the machine's CUDA torch; the package is
# installed with --no-deps and only the few missing pure-Python dependencies are added (pip gives
# up at once where there is no network).
set -uo pipefail

USAGE="usage: scripts/bench_gpu.sh OUT_DIR [--tests] [--pack FILE.tgz]"
OUT="${1:?$USAGE}"
shift
TESTS=0
PACK=""
while [ $# -gt 0 ]; do
    case "$1" in
        --tests) TESTS=1 ;;
        --pack) PACK="${2:?$USAGE}"; shift ;;
        *) echo "$USAGE" >&2; exit 2 ;;
    esac
    shift
done
PRECISIONS="${PRECISIONS:-fp16 fp32}"
# reference backends first: a fault in a plugin kernel (sticky for the process) then costs only
# the backends after it. torch-plugins-compiled (~2 min of compilation) is a step of its own.
BACKENDS_ALL="${BACKENDS:-torch,torch-cudagraph,torch-plugins,torch-plugins-cudagraph}"
KERNELS="${KERNELS:-1}"
COMPILED="${COMPILED:-1}"
BUDGET_S="${BUDGET_S:-0}"
PYTEST_S="${PYTEST_S:-180}"
# the interpreter that holds CUDA torch: python3 where there is no `python`
PY="${PYTHON:-$(command -v python3 || command -v python || echo python3)}"
export PYTHONUNBUFFERED=1  # a step killed at its limit still leaves what it printed
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
[ -n "$PACK" ] && { mkdir -p "$(dirname "$PACK")"; PACK="$(cd "$(dirname "$PACK")" && pwd)/$(basename "$PACK")"; }
START=$SECONDS
FAILED=()
SKIPPED=()
step() { echo "== [$((SECONDS - START)) s] $*"; }
pack() {
    [ -z "$PACK" ] && return 0
    tar -czf "$PACK.tmp" --exclude='*-traces' -C "$(dirname "$OUT")" "$(basename "$OUT")" && mv "$PACK.tmp" "$PACK"
}
# `timeout` with what is left of BUDGET_S (capped at $2 seconds when given), or nothing without a
# budget; `fits NAME MIN`: whether MIN seconds are left, else NAME is recorded as skipped.
left() { echo $((BUDGET_S - (SECONDS - START))); }
limit() {
    local s
    if [ "$BUDGET_S" -gt 0 ]; then s=$(left); else s=${1:-0}; fi
    if [ -n "${1:-}" ] && [ "$s" -gt "$1" ]; then s=$1; fi
    if [ "$s" -gt 0 ]; then echo "timeout -k 5 $s"
    elif [ "$BUDGET_S" -gt 0 ]; then echo "timeout 1"; fi  # the budget is spent: no step runs unbounded
}
fits() {
    if [ "$BUDGET_S" -gt 0 ] && [ "$(left)" -lt "$2" ]; then
        echo "== skipped: $1 (budget: $(left) s left, needs about $2 s)"
        SKIPPED+=("$1")
        return 1
    fi
}

step "checking torch and the GPU"
if ! "$PY" - <<'EOF'
import sys, torch
if not torch.cuda.is_available():
    sys.exit(f"error: torch {torch.__version__} sees no CUDA device (built for CUDA {torch.version.cuda})")
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name()}")
EOF
then exit 2; fi
# the extension for this GPU only (an inherited TORCH_CUDA_ARCH_LIST of many targets multiplies nvcc's time)
TORCH_CUDA_ARCH_LIST="$("$PY" -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())')"
export TORCH_CUDA_ARCH_LIST
echo "TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST"

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
    eval "$(limit 60) $PY -m pip install --quiet --retries 0 --timeout 5 --disable-pip-version-check $missing" \
        || echo "warning: could not install $missing (offline?); without matplotlib the PNG is skipped, without ninja the build is serial"
fi

step "building the extension (pip install --no-build-isolation --no-deps -e .)"
if ! $(limit 300) "$PY" -m pip install --quiet --no-build-isolation --no-deps -e . >"$OUT/build.log" 2>&1; then
    tail -n 30 "$OUT/build.log"
    echo "error: the package/extension build failed or ran out of time (full log: $OUT/build.log)"
    pack
    exit 1
fi
# without CUDA kernels every plugin backend is skipped and the run measures nothing of ours
if ! "$PY" -c "import sys, plugins.torch_ext as e; print('plugins._C CUDA kernels:', e.has_cuda_kernels()); sys.exit(not e.has_cuda_kernels())"; then
    echo "error: plugins._C has no CUDA kernels (nvcc missing at build time?): $OUT/build.log"
    pack
    exit 1
fi
pack

# bench PRECISION NAME BACKENDS [extra options]: one `eventspd-export bench` step, files bench-hd-cuda-NAME.*
bench() {
    local prec="$1" name="$2" backends="$3"
    shift 3
    step "eventspd-export bench --config hd --device cuda --precision $prec --backends $backends $*"
    if ! $(limit) "$PY" -m eventspd_export bench --config hd --device cuda --backends "$backends" \
            --k 1,64,256,1024,4096 --precision "$prec" "$@" \
            --json "$OUT/bench-hd-cuda-$name.json" --plot "$OUT/bench-hd-cuda-$name.png" \
            2> "$OUT/bench-hd-cuda-$name.log" | tee "$OUT/bench-hd-cuda-$name.txt"; then
        tail -n 20 "$OUT/bench-hd-cuda-$name.log"
        FAILED+=("bench $name")
    fi
    pack
}

if [ "$TESTS" = 1 ] && fits "pytest -m gpu" 60; then
    step "pytest -m gpu (CUDA kernels against the reference ops, whole model plugin vs reference)"
    # a module that fails to import must not cancel the others' GPU tests
    if ! $(limit "$PYTEST_S") "$PY" -m pytest -m gpu -q -p no:cacheprovider --continue-on-collection-errors tests \
            2>&1 | tee "$OUT/gpu-tests.txt"; then
        FAILED+=("pytest -m gpu")
    fi
    pack
fi

if [ "$KERNELS" = 1 ] && fits "plugins.bench_gpu" 40; then
    step "plugins/bench_gpu.py (kernels against the reference ops)"
    if ! $(limit) "$PY" -m plugins.bench_gpu "$OUT/kernels-hd.json" --config hd 2>&1 | tee "$OUT/kernels-hd.txt"; then
        FAILED+=("plugins.bench_gpu")
    fi
    pack
fi

if [[ " $PRECISIONS " == *" fp16 "* ]]; then
    fits "bench fp16" 60 && bench fp16 fp16 "$BACKENDS_ALL"
    # the targets' level: torch.compile + CUDA graphs for both models (about 2 min of compilation)
    [ "$COMPILED" = 1 ] && fits "bench fp16-compiled" 150 && bench fp16 fp16-compiled torch-plugins-compiled
fi

if [ "${PACKED_KV_AB:-1}" = 1 ] && [[ " $PRECISIONS " == *" fp16 "* ]] && fits "bench fp16-packed-kv" 40; then
    # A/B of model_def.packed (B2/B5's K/V projections as one GEMM each): the same graphed
    # backend as in the fp16 run above, packed; no dense baseline (that run has it).
    bench fp16 fp16-packed-kv torch-plugins-cudagraph --no-dense --no-stages --packed-kv
fi

if [ "${PROFILE:-1}" = 1 ]; then
    # Where the time goes, per stage and kernel (issue 15: stem..L2, the decoder's launches),
    # with the reference ops and with the plugin ops (fused ConvNeXt-V2 blocks), fp16, K=256.
    for ops in reference plugin; do
        fits "profile $ops" 40 || continue
        step "scripts/profile_stages.py --ops $ops (fp16, hd, K=256)"
        if ! PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" $(limit) "$PY" scripts/profile_stages.py --config hd \
                --device cuda --precision fp16 --ops "$ops" --k 256 \
                --out "$OUT" 2> "$OUT/profile-$ops-fp16.log" >/dev/null; then
            tail -n 20 "$OUT/profile-$ops-fp16.log"
            FAILED+=("profile $ops")
        fi
        pack
    done
fi

if [[ " $PRECISIONS " == *" fp32 "* ]]; then
    fits "bench fp32" 60 && bench fp32 fp32 "$BACKENDS_ALL"
fi

step "done; files in $OUT:"
ls -l "$OUT"
pack && [ -n "$PACK" ] && echo "packed into $PACK"
[ ${#SKIPPED[@]} -gt 0 ] && echo "skipped for the budget: ${SKIPPED[*]}"
if [ ${#FAILED[@]} -gt 0 ]; then
    echo "failed steps: ${FAILED[*]}"
    exit 1
fi
