"""The committed trained demo checkpoint (checkpoints/demo.pt) reproduces the held-out metrics
stored next to it (checkpoints/demo.eval.json) and quoted in the README, beats the best
constant-depth predictor, depends on its events, and goes through ONNX, calibration
and the precision report like any other checkpoint."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from eventspd_export.evaluation.evaluate import EvalOptions, evaluate, markdown_table
from model_def.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "checkpoints" / "demo.pt"
STORED = REPO / "checkpoints" / "demo.eval.json"


@pytest.fixture(scope="module")
def demo():
    model, report = load_checkpoint(DEMO)
    return model


@pytest.fixture(scope="module")
def stored():
    return json.loads(STORED.read_text())


@pytest.fixture(scope="module")
def measured(demo, stored):
    torch.set_num_threads(1)
    return evaluate(demo, EvalOptions(data=stored["data"], k=stored["k"], windows=stored["windows"],
                                      sequence=stored["sequence"], seed=stored["seed"]))


def test_demo_checkpoint_is_small_and_self_describing(demo):
    assert DEMO.stat().st_size < 8e6
    assert demo.cfg.name == "demo"
    payload = torch.load(DEMO, map_location="cpu", weights_only=True)
    training = payload["training"]
    assert training["steps"] >= 100 and training["options"]["config"] == "demo"
    assert training["weights_dtype"] == "float16"


def test_demo_metrics_reproduce(measured, stored):
    assert measured["queries"] == stored["queries"]
    for name in ("pytorch", "best constant"):
        for rng in ("all", "10m", "20m", "30m"):
            got, want = measured["metrics"][name][rng], stored["metrics"][name][rng]
            assert got["count"] == want["count"], (name, rng)
            for key in ("abs_rel", "rmse", "silog", "sq_rel", "rmse_log"):
                assert got[key] == pytest.approx(want[key], rel=2e-3, abs=1e-6), (name, rng, key)
            for key in ("delta1", "delta2", "delta3"):  # a query or two may cross 1.25^n
                assert got[key] == pytest.approx(want[key], abs=3.0 / want["count"]), (name, rng, key)


def test_demo_beats_the_best_constant(measured):
    """What the README claims: AbsRel below the oracle constant's (the depth that minimises
    AbsRel on these very queries), and RMSE, δ<1.25 and SILog well beyond it."""
    model = measured["metrics"]["pytorch"]["all"]
    const = measured["metrics"]["best constant"]["all"]
    assert model["abs_rel"] < const["abs_rel"] - 0.05
    assert model["rmse"] < 0.75 * const["rmse"]
    assert model["delta1"] > const["delta1"] + 0.1
    assert model["silog"] < const["silog"] - 10.0


def test_demo_uses_the_events(demo, stored, measured):
    """The same windows with every event removed (`evaluate --no-events`): AbsRel rises
    clearly, i.e. the answers move with the events (README: what this does and does not show)."""
    blind = evaluate(demo, EvalOptions(data=stored["data"], k=stored["k"], windows=stored["windows"],
                                       sequence=stored["sequence"], seed=stored["seed"], drop_events=True))
    assert blind["metrics"]["pytorch"]["all"]["abs_rel"] > measured["metrics"]["pytorch"]["all"]["abs_rel"] + 0.03


def test_readme_quotes_the_stored_metrics(stored):
    readme = (REPO / "README.md").read_text()
    for line in markdown_table(stored).splitlines():
        assert line in readme, f"README.md lacks the line: {line}"


def test_demo_through_onnx_and_precision_report(demo, tmp_path):
    """Export, then the precision pipeline on held-out simulator scenes: fp16 and int8 stay
    close to fp32 against ground truth, not only against the fp32 output."""
    from calibration.pipeline import CalibrationOptions, calibrate
    from eventspd_export.export.onnx_export import ExportOptions, export_onnx

    torch.set_num_threads(1)
    export_onnx(demo, ExportOptions(tmp_path / "fp32"))
    report = calibrate(demo, CalibrationOptions(tmp_path / "fp32", tmp_path / "out", data="synthetic:1",
                                                calib_windows=3, eval_windows=4, budget=None,
                                                k_calib=128, k_eval=(256,), cache_dir=tmp_path / "c"))
    rows = {r["precision"]: r for r in report["rows"]}
    ref = rows["torch-fp32"]["vs_gt"]
    assert rows["onnx-fp32"]["vs_fp32"]["max_rel"] < 1e-4
    assert rows["onnx-fp16"]["vs_fp32"]["median_rel"] < 1e-3
    assert rows["onnx-int8"]["vs_fp32"]["median_rel"] < 5e-2
    for precision in ("onnx-fp16", "onnx-int8"):
        gt = rows[precision]["vs_gt"]
        assert np.isfinite(gt["abs_rel"])
        assert abs(gt["abs_rel"] - ref["abs_rel"]) < 0.1 * ref["abs_rel"], precision
        assert abs(gt["delta1"] - ref["delta1"]) < 0.05, precision
