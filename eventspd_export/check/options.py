"""What ``eventspd-export check`` is asked to do (:class:`CheckOptions`), and its backend names."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from eventspd_export.artifacts import PRECISIONS
from model_def.errors import UserError

BACKENDS = ("onnxrt", "trt", "emulated")
DEFAULT_KS = (1, 256, 4096)
SMOKE = "smoke"  # --data: eventspd_export.data.synthetic windows


@dataclass
class CheckOptions:
    onnx_dir: Path
    backend: str = "onnxrt"
    precision: str = "fp32"
    ks: tuple[int, ...] = DEFAULT_KS
    engine_dir: Path | None = None  # trt: where the engines are (default: onnx_dir)
    plugins: Path | None = None  # trt: plugin library (default: next to the engines)
    save_dir: Path | None = None  # default: onnx_dir / "check"
    data: str = SMOKE
    windows: int = 2
    num_events: int = 20_000
    seed: int = 0

    def validate(self) -> None:
        if self.backend not in BACKENDS:
            raise UserError(f"unknown backend {self.backend!r}; choose one of {', '.join(BACKENDS)}")
        if self.precision not in PRECISIONS:
            raise UserError(f"unknown precision {self.precision!r}; choose one of {', '.join(PRECISIONS)}")
        if not self.ks or any(k < 1 for k in self.ks):
            raise UserError(f"--k {','.join(map(str, self.ks))}: every K must be >= 1")
        if self.windows < 1:
            raise UserError(f"--windows {self.windows}: at least one window is needed")
        if self.num_events < 0:
            raise UserError(f"--events {self.num_events} must be >= 0")
        given = [o for o, v in (("--engine-dir", self.engine_dir), ("--plugins", self.plugins)) if v is not None]
        if given and self.backend != "trt":  # else silently ignored: the user meant to check engines
            raise UserError(f"{' and '.join(given)} {'is' if len(given) == 1 else 'are'} for --backend trt "
                            f"(the engines); --backend {self.backend} does not read "
                            f"{'it' if len(given) == 1 else 'them'}")

    @property
    def save(self) -> Path:
        return Path(self.save_dir) if self.save_dir else Path(self.onnx_dir) / "check"
