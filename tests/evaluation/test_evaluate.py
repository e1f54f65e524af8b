"""`eventspd-export evaluate`: protocol, baseline, ONNX path and errors (evaluate.py)."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from eventspd_export.cli import main
from eventspd_export.evaluation.evaluate import (EvalOptions, best_constant, evaluate, format_report,
                                                 valid_pixel_queries)
import eventspd_export.evaluation.evaluate as evaluate_module
from eventspd_export.evaluation.metrics import gt_at_queries
from model_def import EventSPD, get_config
from model_def.checkpoint import save_checkpoint


def test_best_constant_minimises_absrel():
    g = np.random.default_rng(0).uniform(1.5, 45.0, 999)
    c = best_constant(g)
    absrel = lambda x: np.mean(np.abs(x - g) / g)  # noqa: E731
    grid = np.linspace(1.5, 45.0, 20001)
    assert absrel(c) <= min(absrel(x) for x in grid) + 1e-9


def test_queries_only_on_valid_pixels():
    depth = np.full((20, 30), np.nan, np.float32)
    depth[5, 7] = 3.0
    depth[12, 2] = 8.0
    q = valid_pixel_queries(depth, 50, np.random.default_rng(0))
    assert q.shape == (50, 2)
    assert set(map(tuple, q.astype(int))) <= {(7, 5), (2, 12)}
    assert len(valid_pixel_queries(np.full((4, 4), np.nan), 5, np.random.default_rng(0))) == 0


@pytest.fixture(scope="module")
def demo_untrained(tmp_path_factory):
    path = tmp_path_factory.mktemp("eval") / "untrained.pt"
    save_checkpoint(EventSPD(get_config("demo"), seed=3), path)
    return path


def test_evaluate_report_fields_and_determinism(demo_untrained, monkeypatch):
    from model_def.checkpoint import load_checkpoint

    torch.set_num_threads(1)
    model, _ = load_checkpoint(demo_untrained)
    a = evaluate(model, EvalOptions(windows=3, sequence=2, k=32))
    b = evaluate(model, EvalOptions(windows=3, sequence=2, k=32))
    assert a == b
    assert a["queries"] == 96 and a["scored_windows"] == 3
    assert set(a["metrics"]) == {"pytorch", "best constant"}
    for rows in a["metrics"].values():
        assert set(rows) == {"all", "10m", "20m", "30m"}
        assert rows["all"]["count"] == 96
        assert rows["10m"]["count"] <= rows["20m"]["count"] <= rows["30m"]["count"] <= 96
        for key in ("abs_rel", "rmse", "delta1", "delta2", "delta3", "silog"):
            assert np.isfinite(rows["all"][key])
    const = a["metrics"]["best constant"]["all"]
    assert a["metrics"]["pytorch"]["all"]["count"] == const["count"]
    assert 0 < a["best_constant_m"] <= a["gt_median_m"]  # 1/g weights pull it below the median
    other = evaluate(model, EvalOptions(windows=3, sequence=2, k=32, seed=1))
    assert other["metrics"]["pytorch"]["all"] != a["metrics"]["pytorch"]["all"]  # seed moves the queries
    blind = evaluate(model, EvalOptions(windows=3, sequence=2, k=32, drop_events=True))
    assert a["events"] == "as recorded" and blind["events"] == "dropped"
    assert blind["queries"] == a["queries"]  # same windows, same ground truth, same queries
    assert blind["metrics"]["best constant"] == a["metrics"]["best constant"]
    assert blind["metrics"]["pytorch"]["all"] != a["metrics"]["pytorch"]["all"]
    # a source holding fewer windows than --windows asks is scored whole, and the header says so
    assert a["windows"] == a["windows_requested"] == 3 and "fewer than" not in format_report(a)
    short = dict(a, windows_requested=10)
    assert "the source holds 3 windows, fewer than the 10 of --windows" in format_report(short).splitlines()[0]
    # ground truth beyond what the model can predict (1/depth_eps) is counted and warned about
    assert a["model_max_depth_m"] == pytest.approx(1000.0) and a["gt_beyond_model_range"] == 0
    assert "warning" not in format_report(a)

    def with_far_sentinel(depth_map, queries):  # the first two depths of each window: a "far" 1e30 m
        g = gt_at_queries(depth_map, queries)
        g[:2] = 1e30
        return g

    monkeypatch.setattr(evaluate_module, "gt_at_queries", with_far_sentinel)
    far = evaluate(model, EvalOptions(windows=3, sequence=2, k=32))
    assert far["gt_beyond_model_range"] == 6 and far["metrics"]["pytorch"]["all"]["count"] == 96
    assert "warning: 6 of the 96 ground-truth depths are beyond the 1000 m" in format_report(far)


def test_evaluate_cli_with_onnx_and_errors(demo_untrained, tmp_path):
    runner = CliRunner()
    onnx_dir = tmp_path / "onnx"
    res = runner.invoke(main, ["onnx", str(demo_untrained), "--out", str(onnx_dir), "--no-verify"])
    assert res.exit_code == 0, res.output
    out = tmp_path / "report.json"
    res = runner.invoke(main, ["evaluate", str(demo_untrained), "--windows", "2", "--sequence", "2",
                               "--k", "16", "--onnx", str(onnx_dir), "--json", str(out)])
    assert res.exit_code == 0, res.output
    report = json.loads(out.read_text())
    assert report["onnx_vs_pytorch"]["max_rel"] <= 1e-4
    assert report["metrics"]["onnx"]["all"]["abs_rel"] == pytest.approx(
        report["metrics"]["pytorch"]["all"]["abs_rel"], rel=1e-4)
    assert "AbsRel" in res.output and "best constant" in res.output
    tiny_ckpt = tmp_path / "tiny.pt"
    save_checkpoint(EventSPD(get_config("tiny"), seed=0), tiny_ckpt)
    for args, message in (
            ([str(tmp_path / "none.pt")], "none.pt"),
            ([str(demo_untrained), "--onnx", str(tmp_path)], "no precompute.onnx"),
            ([str(tiny_ckpt), "--onnx", str(onnx_dir)], "configuration 'demo'"),
            ([str(demo_untrained), "--data", "dsec:" + str(tmp_path / "nope")], "does not exist"),
            ([str(demo_untrained), "--data", "foo"], "unknown event data source")):
        res = runner.invoke(main, ["evaluate", *args, "--windows", "1", "--k", "4"])
        assert res.exit_code == 2, (args, res.output)
        assert message in res.output, (args, res.output)
        assert "Traceback" not in res.output
