"""The export folder check every command makes (eventspd_export/artifacts.py): a corrupt or
truncated graph, a graph whose sha256 is not the manifest's, a manifest of another configuration
or a folder with no export is one `error:` line and exit code 2 in `trt`, `check`, `evaluate
--onnx` and `calibrate`, before any work and without writing anything (issue 14's artifacts
module; issue 17 items 1 and 2)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from helpers import one_error_line
from eventspd_export.artifacts import MANIFEST_FILE, ManifestError, open_export
from eventspd_export.cli import main
from eventspd_export.export.onnx_export import ExportOptions, export_onnx
from model_def import EventSPD, get_config
from model_def.checkpoint import save_checkpoint


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    d = tmp_path_factory.mktemp("export")
    model = EventSPD(get_config("tiny"), seed=0).eval()
    export_onnx(model, ExportOptions(d))
    ckpt = d.parent / "tiny.pt"
    save_checkpoint(model, ckpt)
    return d, ckpt


def _damaged(export, tmp_path, how: str) -> Path:
    src, _ = export
    d = tmp_path / "onnx"
    shutil.copytree(src, d)
    if how == "random":
        (d / "decoder.onnx").write_bytes(np.random.default_rng(0).bytes(5000))
    elif how == "truncated":
        blob = (d / "precompute.onnx").read_bytes()
        (d / "precompute.onnx").write_bytes(blob[: len(blob) // 2])
    elif how == "sha":  # the graph is intact, the manifest's hash is not its hash
        manifest = json.loads((d / MANIFEST_FILE).read_text())
        manifest["graphs"]["precompute"]["sha256"] = "0" * 64
        (d / MANIFEST_FILE).write_text(json.dumps(manifest))
    return d


MESSAGES = {"random": "does not match the sha256", "truncated": "does not match the sha256",
            "sha": "precompute.onnx does not match the sha256"}


def test_open_export_accepts_an_intact_export_and_names_each_defect(export, tmp_path):
    src, _ = export
    e = open_export(src, "fp32", get_config("tiny"))
    assert e.cfg.name == "tiny" and sorted(p.name for p in e.graphs.values()) == ["decoder.onnx", "precompute.onnx"]
    with pytest.raises(ManifestError, match="its graphs are for configuration 'tiny'.*'dsec'"):
        open_export(src, "fp32", get_config("dsec"))
    with pytest.raises(ManifestError, match="precompute.fp16.onnx, decoder.fp16.onnx not found.*calibrate"):
        open_export(src, "fp16")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ManifestError, match="holds no export .*eventspd-export onnx --out"):
        open_export(tmp_path / "empty")
    for how in MESSAGES:
        with pytest.raises(ManifestError, match=MESSAGES[how]):
            open_export(_damaged(export, tmp_path / how, how))


def test_a_hashless_manifest_still_refuses_an_unreadable_graph(export, tmp_path):
    d = _damaged(export, tmp_path, "random")
    manifest = json.loads((d / MANIFEST_FILE).read_text())
    for g in manifest["graphs"].values():
        g.pop("sha256")
    (d / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(ManifestError, match="decoder.onnx is not a readable ONNX file"):
        open_export(d)


@pytest.mark.parametrize("how", sorted(MESSAGES))
def test_every_command_refuses_a_damaged_export_in_one_line(export, tmp_path, how):
    d = _damaged(export, tmp_path, how)
    _, ckpt = export
    before = {p.name: p.read_bytes() for p in d.iterdir()}
    commands = {
        "check": ["check", "--onnx-dir", str(d), "--k", "1", "--windows", "1", "--events", "100"],
        "evaluate": ["evaluate", str(ckpt), "--onnx", str(d), "--windows", "1", "--k", "4"],
        "calibrate": ["calibrate", "--config", "tiny", "--onnx-dir", str(d), "--out", str(tmp_path / "cal"),
                      "--cache-dir", str(tmp_path / "cache")],
        "trt": ["trt", "--onnx-dir", str(d), "--out", str(tmp_path / "eng")],
    }
    for name, args in commands.items():
        line = one_error_line(CliRunner().invoke(main, args), alone=False)
        assert MESSAGES[how] in line, (name, line)
    assert {p.name: p.read_bytes() for p in d.iterdir()} == before  # nothing added or changed
    assert not (tmp_path / "eng").exists() and not (tmp_path / "cal").exists()


def test_reduced_precision_graphs_apart_from_their_export_are_named(tmp_path):
    """`calibrate --out ELSEWHERE` writes *.fp16.onnx where trt/check find no export next to them."""
    from eventspd_export.artifacts import ManifestError, open_export

    (tmp_path / "decoder.fp16.onnx").write_bytes(b"x")
    with pytest.raises(ManifestError, match=r"holds decoder.fp16.onnx but not the export they were made from.*"
                                            r"--out equal to its --onnx-dir"):
        open_export(tmp_path, "fp16")
