"""scripts/bench_gpu.sh's control flow, the one command a GPU session runs once (minutes of device
time, nothing to rerun with): run here with a stand-in interpreter (PYTHON=) that answers each step
as torch, pip, pytest and the benchmarks would, writing the files they write. What is checked: the
steps' order, that a failing or overrunning step costs only itself, that BUDGET_S skips the steps
that cannot fit and says which, and that --pack leaves every result in one archive after each step.
The benchmarks themselves run only on a GPU (tests/bench/test_bench.py runs them on the CPU)."""
from __future__ import annotations

import subprocess
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "bench_gpu.sh"

# Each call's argv goes to $STUB_LOG; $STUB_FAIL names a step that exits 1; $STUB_SLEEP a step that hangs.
STUB = r"""#!/usr/bin/env bash
echo "$*" >> "$STUB_LOG"
step=""
case "$1" in
    -) if grep -q find_spec; then echo "${STUB_MISSING:-}"; else echo "torch 2.11 (stand-in), CUDA 13.0, NVIDIA H200"; fi
       exit 0 ;;
    -c) case "$2" in *capability*) echo 9.0 ;; *has_cuda_kernels*) echo "plugins._C CUDA kernels: True" ;; esac; exit 0 ;;
    -m) step="$2" ;;
    *) step="$(basename "$1")" ;;
esac
json=""; prev=""
for a in "$@"; do [ "$prev" = "--json" ] && json="$a"; prev="$a"; done
[ "$step" = "plugins.bench_gpu" ] && json="$3"
[ -n "$json" ] && echo '{}' > "$json"
[ "$step" = "pytest" ] && echo "1 passed"
[ "$step" = "${STUB_SLEEP:-}" ] && sleep 30
[ "$step" = "${STUB_FAIL:-}" ] && exit 1
exit 0
"""


def run_script(tmp_path: Path, *args: str, **env: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    stub = tmp_path / "python-stub"
    stub.write_text(STUB)
    stub.chmod(0o755)
    log = tmp_path / "calls.log"
    log.write_text("")
    proc = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "out"), *args], capture_output=True, text=True,
                          timeout=120, env={"PATH": "/usr/bin:/bin", "PYTHON": str(stub), "STUB_LOG": str(log),
                                            **env})
    return proc, log.read_text().splitlines()


def steps(calls: list[str]) -> list[str]:
    """The measured steps, in the order they ran."""
    names = []
    for c in calls:
        if c.startswith("-m pytest"):
            names.append("pytest")
        elif c.startswith("-m plugins.bench_gpu"):
            names.append("kernels")
        elif c.startswith("-m eventspd_export bench"):
            json = c.split("--json ")[1].split()[0]
            names.append(Path(json).name.removeprefix("bench-hd-cuda-").removesuffix(".json"))
        elif "profile_stages.py" in c:
            names.append("profile-" + c.split("--ops ")[1].split()[0])
    return names


def test_every_step_runs_in_order_and_the_archive_holds_the_results(tmp_path):
    proc, calls = run_script(tmp_path, "--tests", "--pack", str(tmp_path / "back" / "h200.tgz"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert steps(calls) == ["pytest", "kernels", "fp16", "fp16-compiled", "fp16-packed-kv", "profile-reference",
                            "profile-plugin", "fp32"]
    # the reference backends run before the plugin ones; the compiled backend alone
    fp16 = next(c for c in calls if "bench-hd-cuda-fp16.json" in c)
    assert "--backends torch,torch-cudagraph,torch-plugins,torch-plugins-cudagraph " in fp16
    assert "--backends torch-plugins-compiled " in next(c for c in calls if "fp16-compiled.json" in c)
    # the extension for this GPU's architecture alone, and a module that fails to import cancels nothing
    assert "TORCH_CUDA_ARCH_LIST=9.0" in proc.stdout
    assert "--continue-on-collection-errors" in next(c for c in calls if c.startswith("-m pytest"))
    # nothing missing: pip only builds the package
    assert [c for c in calls if c.startswith("-m pip")] == ["-m pip install --quiet --no-build-isolation --no-deps -e ."]
    with tarfile.open(tmp_path / "back" / "h200.tgz") as tar:
        names = {Path(n).name for n in tar.getnames()}
    assert {"build.log", "gpu-tests.txt", "kernels-hd.json", "bench-hd-cuda-fp16.json",
            "bench-hd-cuda-fp16-compiled.json", "bench-hd-cuda-fp32.json"} <= names, names
    assert not list((tmp_path / "back").glob("*.tmp"))


def test_a_failing_step_costs_only_itself(tmp_path):
    proc, calls = run_script(tmp_path, STUB_FAIL="plugins.bench_gpu")
    assert proc.returncode == 1
    assert "failed steps: plugins.bench_gpu" in proc.stdout
    assert steps(calls) == ["kernels", "fp16", "fp16-compiled", "fp16-packed-kv", "profile-reference",
                            "profile-plugin", "fp32"]


def test_a_hanging_step_is_stopped_at_its_limit_and_the_rest_runs(tmp_path):
    proc, calls = run_script(tmp_path, "--tests", STUB_SLEEP="pytest", PYTEST_S="2")
    assert proc.returncode == 1 and "failed steps: pytest -m gpu" in proc.stdout, proc.stdout
    assert steps(calls)[:3] == ["pytest", "kernels", "fp16"]


def test_the_budget_skips_what_cannot_fit_and_says_so(tmp_path):
    # 100 s: everything but the compiled backend's 150 s minimum fits (the stand-in steps take no time)
    proc, calls = run_script(tmp_path, "--tests", BUDGET_S="100")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "fp16-compiled" not in steps(calls) and "fp32" in steps(calls)
    assert "== skipped: bench fp16-compiled (budget: " in proc.stdout
    assert "skipped for the budget: bench fp16-compiled" in proc.stdout


def test_a_missing_dependency_is_installed_without_waiting_for_a_network(tmp_path):
    proc, calls = run_script(tmp_path, STUB_MISSING="'ninja'")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "-m pip install --quiet --retries 0 --timeout 5 --disable-pip-version-check ninja" in calls


def test_a_spent_budget_still_bounds_every_step(tmp_path):
    # BUDGET_S=1: the checks before the build take no time here, so the build (with no minimum
    # of its own) gets what is left, never an unbounded run; every measured step is skipped
    proc, calls = run_script(tmp_path, "--tests", BUDGET_S="1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert steps(calls) == []
    assert "skipped for the budget: pytest -m gpu plugins.bench_gpu bench fp16" in proc.stdout


def test_bad_arguments_are_refused(tmp_path):
    proc, _ = run_script(tmp_path, "--test")
    assert proc.returncode == 2 and "usage: scripts/bench_gpu.sh OUT_DIR" in proc.stderr


def test_the_kernel_benchmark_keeps_the_rows_measured_before_a_failure(tmp_path, monkeypatch, capsys):
    # a kernel that faults on its first GPU run must not take the rows measured before it along
    import json

    from plugins import bench_gpu

    def faults(config, ks, iters, events, log=print, rows=None):
        rows.append({"op": "topr_route", "K": 256})
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(bench_gpu.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(bench_gpu.torch.cuda, "get_device_name", lambda *a: "stand-in GPU")
    monkeypatch.setattr(bench_gpu, "bench", faults)
    out = tmp_path / "kernels.json"
    assert bench_gpu.main([str(out)]) == 1
    data = json.loads(out.read_text())
    assert data["results"] == [{"op": "topr_route", "K": 256}]
    assert data["error"] == "RuntimeError: CUDA error: an illegal memory access was encountered"
    assert "(1 rows before the error)" in capsys.readouterr().out
