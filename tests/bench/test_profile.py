"""The per-stage kernel profile (eventspd_export/bench/profile.py, scripts/profile_stages.py):
the attribution of kernels to stage ranges, on crafted CUDA-format traces and on a real CPU run."""

from __future__ import annotations

import json
import runpy

import pytest

from eventspd_export.bench.profile import PREFIX, StageRanges, attribute, format_profile, profile_stages
from helpers import REPO
from model_def.model import DECODER_MARKS, PRECOMPUTE_MARKS


def ann(cat, stage, ts, dur):
    return {"cat": cat, "name": PREFIX + stage, "ts": ts, "dur": dur}


def test_cuda_kernels_go_to_the_range_they_start_in():
    events = [ann("gpu_user_annotation", "a", 100, 50), ann("gpu_user_annotation", "b", 150, 100),
              ann("user_annotation", "a", 0, 10),  # the CPU-side range: not the GPU timeline
              {"cat": "kernel", "name": "k1", "ts": 100, "dur": 10},
              {"cat": "kernel", "name": "k1", "ts": 120, "dur": 5},
              {"cat": "kernel", "name": "k2", "ts": 149, "dur": 30},  # starts in a, runs into b
              {"cat": "gpu_memset", "name": "Memset", "ts": 150, "dur": 2},  # b's first instant
              {"cat": "kernel", "name": "late", "ts": 250, "dur": 7},  # b ends at 250: outside
              {"cat": "cpu_op", "name": "aten::add", "ts": 110, "dur": 3}]
    stages, unattributed = attribute(events, "cuda", ("a", "b", "c"))
    assert stages["a"]["total_us"] == 50 and stages["a"]["kernels_us"] == 45
    assert [(k["name"], k["count"], k["total_us"]) for k in stages["a"]["kernels"]] == [("k2", 1, 30), ("k1", 2, 15)]
    assert stages["a"]["kernels"][0]["share"] == pytest.approx(30 / 45)
    assert stages["b"]["kernels"] == [{"name": "Memset", "count": 1, "total_us": 2.0, "share": 1.0}]
    assert stages["c"] == {"total_us": 0.0, "kernels_us": 0.0, "kernels": []}
    assert unattributed == 7


def test_cpu_ops_count_only_at_the_top_level():
    events = [ann("user_annotation", "a", 0, 100),
              {"cat": "cpu_op", "name": "aten::conv2d", "ts": 10, "dur": 40, "tid": 1},
              {"cat": "cpu_op", "name": "aten::convolution", "ts": 11, "dur": 38, "tid": 1},  # nested
              {"cat": "cpu_op", "name": "aten::add", "ts": 60, "dur": 5, "tid": 1},
              {"cat": "cpu_op", "name": "aten::add", "ts": 12, "dur": 5, "tid": 2}]  # another thread
    stages, unattributed = attribute(events, "cpu", ("a",))
    assert {k["name"]: (k["count"], k["total_us"]) for k in stages["a"]["kernels"]} == {
        "aten::conv2d": (1, 40.0), "aten::add": (2, 10.0)}
    assert unattributed == 0


def test_marks_must_come_in_order():
    with pytest.raises(RuntimeError, match="stage mark 'b' where 'a' was expected"):
        StageRanges(("a", "b")).start()("b")
    ranges = StageRanges(("a", "b")).start()
    ranges("a")
    with pytest.raises(RuntimeError, match=r"stages \('b',\) were never marked"):
        ranges.finish()


def test_profile_of_the_tiny_model_on_cpu():
    result = profile_stages("tiny", "cpu", k=8, events=2000, warmup=0)
    assert tuple(result["precompute"]) == PRECOMPUTE_MARKS and tuple(result["decoder"]) == DECODER_MARKS
    assert result["unattributed_us"] == {"precompute": 0.0, "decoder": 0.0}  # the ranges cover both passes
    splat = result["precompute"]["f3_encode_splat"]["kernels"]
    assert [(k["name"], k["count"]) for k in splat] == [("eventspd::event_splat", 1)]
    for phase in ("precompute", "decoder"):
        for stage, s in result[phase].items():
            assert s["kernels"], stage  # every stage ran something
            assert 0 < s["kernels_us"] <= s["total_us"] * 1.01, (stage, s)
    assert "aten::conv2d" in {k["name"] for k in result["precompute"]["f3_convs"]["kernels"]}
    assert "f3_convs" in format_profile(result)


def test_script_writes_json_table_and_traces(tmp_path, monkeypatch):
    out = tmp_path / "prof"
    monkeypatch.setattr("sys.argv", ["profile_stages.py", "--config", "tiny", "--events", "1000", "--k", "4",
                                     "--out", str(out)])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(str(REPO / "scripts" / "profile_stages.py"), run_name="__main__")
    assert exit_.value.code == 0
    data = json.loads((out / "profile-reference-fp32.json").read_text())
    assert data["schema"] == "eventspd-export/profile-1" and data["k"] == 4
    assert "stem_l1" in (out / "profile-reference-fp32.txt").read_text()
    assert {p.name for p in (out / "profile-reference-fp32-traces").iterdir()} == {"precompute-trace.json",
                                                                                   "decoder-trace.json"}
