"""The check's tolerances per precision and output kind (the reasoning is in
``polygraphy_check``'s docstring), and the same comparisons written as ``polygraphy run``
command lines."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from eventspd_export.artifacts import ENGINE_FILES, GRAPHS, onnx_file
from model_def import contract
from model_def.config import ModelConfig


@dataclass(frozen=True)
class Tolerance:
    stat: str  # Polygraphy check_error_stat: elemwise | median | quantile | max | mean
    atol: float
    rtol: float
    quantile: float | None = None
    gating: bool = True

    def describe(self) -> str:
        if not self.gating:
            return "reported only"
        if self.stat == "elemwise":
            return (f"each: rel<={_num(self.rtol)}" if self.atol == 0 else
                    f"each: abs<={_num(self.atol)} or rel<={_num(self.rtol)}")
        stat = f"q{self.quantile:g}" if self.stat == "quantile" else self.stat
        if self.atol == 0:
            return f"{stat} rel<={_num(self.rtol)}"
        return f"{stat}: abs<={_num(self.atol)} or rel<={_num(self.rtol)}"

    def cli_args(self) -> str:
        """The same check as ``polygraphy run`` options."""
        if not self.gating:  # statistics are printed, nothing is gated
            return "--check-error-stat median --atol inf --rtol inf"
        args = [] if self.stat == "elemwise" else [f"--check-error-stat {self.stat}"]
        if self.stat == "quantile":
            args.append(f"--error-quantile {self.quantile:g}")
        args.append(f"--atol {_num(self.atol)} --rtol {_num(self.rtol)}")
        return " ".join(args)

    def polygraphy(self) -> tuple[float, float, str, float | None]:
        """(atol, rtol, check_error_stat, error_quantile) to hand to CompareFunc.simple."""
        if not self.gating:
            return math.inf, math.inf, "max", None
        return self.atol, self.rtol, self.stat, self.quantile


def _num(x: float) -> str:
    """1e-4 rather than 0.0001: tolerances read as orders of magnitude."""
    if x == 0 or math.isinf(x):
        return "0" if x == 0 else "inf"
    m, e = f"{x:.0e}".split("e")
    return f"{m}e{int(e)}"


TOLERANCES: dict[str, dict[str, Tolerance]] = {
    "fp32": {"features": Tolerance("elemwise", 1e-4, 1e-4),
             "depth": Tolerance("elemwise", 0.0, 1e-4)},
    "fp16": {"features": Tolerance("median", 0.0, 1e-2),
             "depth": Tolerance("quantile", 0.0, 1e-2, quantile=0.99)},
    "int8": {"features": Tolerance("max", math.inf, math.inf, gating=False),
             "depth": Tolerance("median", 0.0, 2e-2)},
}
DEPTH_OUTPUTS = tuple(s.name for s in contract.decoder_outputs(ModelConfig("names", 256, 256)))


def tolerance_for(precision: str, output: str) -> Tolerance:
    return TOLERANCES[precision]["depth" if output in DEPTH_OUTPUTS else "features"]


def polygraphy_commands(onnx_dir: str | Path, precision: str, backend: str = "onnxrt",
                        save_dir: str | Path | None = None, engine_dir: str | Path | None = None,
                        plugins: str | Path | None = None, flavour: str = "tensorrt") -> list[str]:
    """``polygraphy run`` lines that repeat the graph-alone comparisons of ``check`` with the
    files it saved (same inputs, same reference, same tolerances). TensorRT-RTX engines
    (``flavour``) need ``POLYGRAPHY_USE_TENSORRT_RTX=1`` for Polygraphy to load that flavour."""
    if backend == "emulated":  # Polygraphy has no runner for it
        return []
    onnx_dir = Path(onnx_dir)
    save = Path(save_dir) if save_dir else onnx_dir / "check"
    lines = []
    for graph in GRAPHS:
        tol = TOLERANCES[precision]["features" if graph == "precompute" else "depth"]
        if backend == "onnxrt":
            model = f"{(onnx_dir / onnx_file(graph, precision)).as_posix()} --onnxrt"
        else:
            edir = Path(engine_dir) if engine_dir else onnx_dir
            lib = Path(plugins) if plugins else edir / "libeventspd_plugins.so"
            model = (f"{(edir / ENGINE_FILES[graph]).as_posix()} --model-type engine --trt "
                     f"--plugins {lib.as_posix()}")
        env = "POLYGRAPHY_USE_TENSORRT_RTX=1 " if backend == "trt" and flavour == "tensorrt-rtx" else ""
        lines.append(f"{env}polygraphy run {model} --load-inputs {(save / graph / 'inputs.json').as_posix()} "
                     f"--load-outputs {(save / graph / 'reference.json').as_posix()} {tol.cli_args()}")
    return lines
