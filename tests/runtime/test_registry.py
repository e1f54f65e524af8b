"""The runtime layer's backend registry: one table of names, each saying why it cannot run here;
the benchmark has exactly one pipeline per name; `eventspd-export backends` prints the table."""

from __future__ import annotations

import importlib.util
import json
import sys
from types import SimpleNamespace

import pytest
import torch
from click.testing import CliRunner

from eventspd_export.bench import backends as bench_backends
from eventspd_export.bench.options import BACKENDS, BackendSkipped
from eventspd_export.cli.app import main
from eventspd_export.runtime import registry
from model_def.errors import UserError

HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None


def test_bench_has_one_pipeline_per_registered_backend():
    assert BACKENDS == registry.names()
    assert set(bench_backends.PIPELINES) == set(registry.names())
    assert registry.names()[:2] == ("torch", "torch-plugins")


def test_what_this_machine_can_run():
    cpu = {r["name"]: r for r in registry.table("cpu")}
    assert cpu["torch"]["available"] and cpu["torch"]["reason"] is None
    assert cpu["torch"]["version"].startswith(f"torch {torch.__version__}")
    assert cpu["torch-plugins"]["available"]  # the editable install built plugins._C
    assert cpu["onnxrt"]["available"]
    for name in ("torch-cudagraph", "torch-plugins-cudagraph", "torch-plugins-compiled"):
        assert cpu[name]["reason"] == "CUDA graphs need --device cuda", cpu[name]
    if not HAS_TENSORRT:
        assert "tensorrt does not import" in cpu["trt"]["reason"] and cpu["trt"]["version"] is None
    if not torch.cuda.is_available():
        for r in registry.table("cuda"):
            assert not r["available"] and r["reason"], r
        assert "sees no CUDA device" in registry.why_not("torch", "cuda")


def test_a_missing_extension_is_the_reason(monkeypatch):
    # a None entry makes `import plugins.torch_ext` raise ImportError, as on an unbuilt tree
    monkeypatch.setitem(sys.modules, "plugins.torch_ext", None)
    assert "plugins.torch_ext does not import" in registry.why_not("torch-plugins", "cpu")
    assert registry.why_not("torch", "cpu") is None
    row = next(r for r in registry.table("cpu") if r["name"] == "torch-plugins")
    assert not row["available"] and row["version"] is None


def test_the_skip_comes_from_the_registry(monkeypatch):
    def broken(device_type):
        return "mutated: this backend is said to be missing"

    monkeypatch.setitem(registry._BACKENDS, "torch",
                        registry.Backend("torch", "x", broken, lambda: None))
    with pytest.raises(BackendSkipped, match="mutated: this backend"):
        # the reason is asked before the pipeline is built (nothing else of `prepared` is read)
        bench_backends.make_pipeline("torch", SimpleNamespace(device=torch.device("cpu")))


def test_names_are_checked():
    with pytest.raises(UserError, match="backend 'tensorflow': choose from torch, torch-plugins"):
        registry.get("tensorflow")
    with pytest.raises(ValueError, match="registered twice"):
        registry.register(registry.Backend("torch", "again", lambda d: None, lambda: None))
    with pytest.raises(UserError, match="backend 'nope'"):
        bench_backends.pipeline_for("nope")(lambda name, prep: None)
    with pytest.raises(ValueError, match="two pipelines"):
        bench_backends.pipeline_for("onnxrt")(lambda name, prep: None)


def test_backends_command():
    result = CliRunner().invoke(main, ["backends"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    for name in registry.names():
        assert any(ln.startswith(name + " ") for ln in lines), name
    assert "why not: CUDA graphs need --device cuda" in result.output
    rows = json.loads(CliRunner().invoke(main, ["backends", "--device", "cuda", "--json"]).output)
    assert [r["name"] for r in rows] == list(registry.names())
    assert CliRunner().invoke(main, ["backends", "--device", "tpu"]).exit_code == 2
