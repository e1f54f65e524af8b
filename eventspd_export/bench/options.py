"""The benchmark's options, names and limits (the JSON fields the package docstring documents)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from model_def import CONFIGS
from model_def.contract import K_LIMIT
from model_def.model import DECODER_MARKS, PRECOMPUTE_MARKS
from model_def.dense_baseline import MODES as DENSE_MODES

from model_def.errors import UserError
from eventspd_export.runtime import registry


SCHEMA = "eventspd-export/bench-1"
BACKENDS = registry.names()  # the runtime layer's table; bench/backends.py has one pipeline per name
# name -> model_def.ops backend
TORCH_BACKENDS = {"torch": "reference", "torch-plugins": "plugin",
                  "torch-cudagraph": "reference", "torch-plugins-cudagraph": "plugin",
                  "torch-plugins-compiled": "plugin"}
GRAPH_BACKENDS = ("torch-cudagraph", "torch-plugins-cudagraph", "torch-plugins-compiled")
COMPILED_BACKENDS = ("torch-plugins-compiled",)  # torch.compile'd Phase A (and dense), then graphed
PRECISIONS = ("fp32", "fp16")
DEVICES = ("cpu", "cuda")
PRECOMPUTE_STAGES = PRECOMPUTE_MARKS  # the stage marks EventSPD.precompute / decode call
DECODER_STAGES = DECODER_MARKS
DENSE_STAGES = ("f3", "vit", "dpt")
STAGE_LABELS = {
    "f3_encode_splat": "F^3 encode+splat", "f3_convs": "F^3 convs", "stem_l1": "stem+L1",
    "l2": "L2", "l3": "L3", "l4": "L4", "convgru": "ConvGRU", "a3_a4": "A3/A4",
    "b1": "B1", "b2": "B2", "b3": "B3", "b4": "B4", "b5": "B5",
    "f3": "F^3", "vit": "resize+ViT-S/14", "dpt": "DPT+upsample",
}
# Fields the module docstring documents (the tests hold the JSON to them).
TOP_FIELDS = ("schema", "created", "config", "environment", "settings", "eventspd_params",
              "dense", "dense_errors", "backends", "summary", "plot")
OK_BACKEND_FIELDS = ("status", "reason", "runtime", "precompute", "decoder", "end_to_end", "fit",
                     "fit_end_to_end", "dense", "speedup", "speedup_square", "crossover", "stages",
                     "stages_reason", "memory")
STATS_FIELDS = ("median_ms", "min_ms", "max_ms", "p25_ms", "p75_ms", "iqr_ms", "mean_ms",
                "std_ms", "n", "samples_ms")
MATPLOTLIB_PIN = "matplotlib==3.11.2"


@dataclass
class BenchOptions:
    config: str = "hd"
    device: str = "cpu"
    backends: tuple[str, ...] = BACKENDS
    ks: tuple[int, ...] = (1, 64, 256, 1024, 4096)
    precision: str = "fp32"
    events: int = 200_000
    repeat: int | None = None  # None: 3 on CPU, 20 on CUDA
    warmup: int | None = None  # None: 1 on CPU, 5 on CUDA
    dense: bool = True
    dense_modes: tuple[str, ...] = DENSE_MODES
    dense_input_hw: dict[str, tuple[int, int]] = field(default_factory=dict)  # tests: small ViT input
    stages: bool = True
    onnx_dir: Path | None = None
    seed: int = 0
    threads: int | None = None  # CPU threads of torch and ONNX Runtime; None: their defaults
    checkpoint: Path | None = None  # weights to time (default: the seeded model of `config`)
    # CUDA-graph backends: pack B2/B5's K/V projections into one GEMM each (model_def.packed).
    # Off by default: slower on the CPU at large K (README, scripts/ab_packed_kv.py) and not yet
    # measured on a GPU (scripts/bench_gpu.sh runs the A/B).
    packed_kv: bool = False

    def resolved(self) -> "BenchOptions":
        """Check the options (UserError with the reason) and fill the device defaults."""
        if self.checkpoint is not None and not Path(self.checkpoint).is_file():
            raise UserError(f"--checkpoint {self.checkpoint}: no such file")
        if self.config not in CONFIGS:
            raise UserError(f"unknown configuration {self.config!r}; choose one of {', '.join(CONFIGS)}")
        if self.device not in DEVICES:
            raise UserError(f"device {self.device!r}: choose one of {', '.join(DEVICES)}")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise UserError("--device cuda: no CUDA device is visible to torch "
                             f"(torch {torch.__version__}, built for CUDA {torch.version.cuda})")
        if self.precision not in PRECISIONS:
            raise UserError(f"precision {self.precision!r}: choose one of {', '.join(PRECISIONS)}")
        unknown = [b for b in self.backends if b not in BACKENDS]
        if unknown or not self.backends:
            raise UserError(f"backends {', '.join(unknown) or '(none)'}: choose from {', '.join(BACKENDS)}")
        ks = tuple(sorted(set(int(k) for k in self.ks)))
        if len(ks) < 2 or ks[0] < 1 or ks[-1] > K_LIMIT:
            raise UserError(f"K values {list(self.ks)}: need at least two distinct values in 1..{K_LIMIT} "
                             "(the fit of T_pre and beta needs two)")
        if self.events < 1:
            raise UserError("events: at least one event (the benchmark does not time empty windows)")
        bad_modes = [m for m in self.dense_modes if m not in DENSE_MODES]
        if bad_modes:
            raise UserError(f"dense modes {bad_modes}: choose from {', '.join(DENSE_MODES)}")
        cuda = self.device == "cuda"
        repeat = self.repeat if self.repeat is not None else (20 if cuda else 3)
        warmup = self.warmup if self.warmup is not None else (5 if cuda else 1)
        if repeat < 1 or warmup < 0:
            raise UserError(f"repeat {repeat} / warmup {warmup}: need repeat >= 1 and warmup >= 0")
        if self.threads is not None and self.threads < 1:
            raise UserError(f"threads {self.threads}: need at least 1")
        if self.onnx_dir is not None:
            check_onnx_dir(Path(self.onnx_dir), self.config, Path(self.checkpoint) if self.checkpoint else None)
        if self.packed_kv and not set(self.backends) & set(GRAPH_BACKENDS):
            raise UserError(f"--packed-kv changes only the CUDA-graph backends ({', '.join(GRAPH_BACKENDS)}); "
                            f"none of them is among {', '.join(self.backends)}")
        return BenchOptions(self.config, self.device, tuple(self.backends), ks, self.precision,
                            self.events, repeat, warmup, self.dense, tuple(self.dense_modes),
                            dict(self.dense_input_hw), self.stages,
                            Path(self.onnx_dir) if self.onnx_dir else None, self.seed, self.threads,
                            Path(self.checkpoint) if self.checkpoint else None, self.packed_kv)


class BackendSkipped(Exception):
    """The backend cannot run here; the message is the reason."""


def check_onnx_dir(onnx_dir: Path, config: str, checkpoint: Path | None = None) -> None:
    """The graphs onnxrt times: present, of ``config``, and (with a manifest) exported from the
    weights the other backends run (``checkpoint``, or the built-in default): onnxrt's accuracy
    columns compare them with those, so another export's graphs would read as a broken export."""
    from eventspd_export.artifacts import MANIFEST_FILE, ManifestError, check_exported_from, open_export
    from model_def.checkpoint import sha256_file
    from eventspd_export.export.onnx_export import DECODER_FILE, PRECOMPUTE_FILE

    missing = [f for f in (PRECOMPUTE_FILE, DECODER_FILE) if not (onnx_dir / f).is_file()]
    if missing:
        raise UserError(f"--onnx-dir {onnx_dir}: missing {', '.join(missing)} "
                         "(write them with `eventspd-export onnx --out DIR`)")
    if (onnx_dir / MANIFEST_FILE).is_file():  # a bare pair of graphs is timed as it is
        export = open_export(onnx_dir)
        if export.cfg.name != config:
            raise UserError(f"--onnx-dir {onnx_dir} holds graphs of config {export.cfg.name!r}, not {config!r}")
        what = f"--checkpoint {checkpoint}" if checkpoint else "the built-in default weights the benchmark runs"
        try:
            check_exported_from(export.manifest, onnx_dir, sha256_file(checkpoint) if checkpoint else "", what)
        except ManifestError as exc:
            raise UserError(f"--onnx-dir: {exc}") from None
