"""Model configurations: sensor size, the seed's fixed architecture and the derived map sizes.

Everything that depends on the sensor resolution is computed here, once, so the model, the
graph contract, the exporter and the plugins agree on the same numbers.

Size rules (the seed assumes 1280x720, where 720/32 = 22.5 does not divide):

* F^3 ds2 downsample (5x5, stride 2, padding 2) and the stem (3x3, stride 2, padding 1) round
  *up*: ``ceil(n / 2)``.
* The three level transitions (L1->L2, L2->L3, L3->L4) are 2x2 stride-2 convolutions without
  padding and round *down*: ``floor(n / 2)``. For HD this gives L4 = 40x22 = 880 tokens, the
  seed's number; the bottom 16 sensor rows (704..719) are covered by L1-L3 but not by an L4
  cell centre (samples there clamp to the last L4 row in B1, or read zero-padding in B4).
* L3's shifted-window attention pads the map at the bottom/right to a multiple of the window
  (HD: 45 -> 48 rows) and masks the padded tokens as keys, so valid outputs do not depend on
  the padding; the padded rows are cropped afterwards.
* Pixel -> level coordinates use the align_corners=False convention:
  ``x_level = (u + 0.5) / stride - 0.5`` with the nominal strides 4, 8, 16, 32. The padded
  stride-2 convolutions (F^3's 5x5 and the stem's 3x3) centre output cell i on input 2i, not
  2i + 0.5, so the receptive field of every level's cell sits 1.5 sensor pixels up-left of the
  nominal centre. The offset is the same at all levels and for every query, the model learns
  it, and B1, B3's anchors and B4 all use the one mapping above, so nothing disagrees inside
  the model; we keep the nominal mapping (it is also what the plugin kernels implement).
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field


def _ceil_half(n: int) -> int:
    return (n + 1) // 2


def _floor_half(n: int) -> int:
    return n // 2


# Bounds on a configuration, checked wherever one is built (a checkpoint's stored configuration
# included): a sensor side of 100000 pixels would make the export allocate tens of GB, and the
# name becomes part of file contents and messages. 4096 covers 4K event sensors; the widths and
# counts are generous multiples of the seed's.
MAX_SENSOR_SIDE = 4096
MAX_WIDTH = 2048  # any channel width (dims, d, ffn, f3_dim)
MAX_COUNT = 64  # heads, depths, layer counts, top-R, points
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


@dataclass(frozen=True)
class ModelConfig:
    """One EventSPD configuration. The seed's architecture is the default; the built-in
    configurations vary the sensor size and the window timing, and ``demo`` also the widths.

    Width rule: ``d`` must equal ``dims[2]`` (the seed feeds L3 features to B1/B4 without a
    projection, "L3: id"), and ``d``, ``dims[2]``, ``dims[3]`` must be multiples of the
    32-wide attention heads."""

    name: str
    width: int
    height: int
    # Event-window timing. The seed runs at 120 Hz (1/120 s windows); F^3 was trained on
    # 20 ms windows. Event time t in [0, 1] (normalised to the window) is scaled by
    # window_s / f3_window_s before the grid encoding, so a 1/120 s window spans the first
    # 41.7 % of F^3's time axis, as it would inside a 20 ms training window.
    window_s: float = 1.0 / 120.0
    f3_window_s: float = 0.020

    # A1: F^3 ds2 (ARCHITECTURE §6)
    f3_levels: int = 4
    f3_features_per_level: int = 2
    f3_min_res: tuple[int, int, int] = (8, 8, 1)
    f3_time_res: int = 8
    f3_dim: int = 64
    f3_depths: tuple[int, int] = (3, 3)
    f3_kernel: int = 7
    f3_bottleneck: int = 2

    # A2: backbone (seed table "Wide Pyramid Backbone")
    dims: tuple[int, int, int, int] = (64, 128, 192, 384)
    depths: tuple[int, int, int, int] = (2, 3, 4, 2)
    l1_kernel: int = 7
    l2_kernel: int = 13
    convnext_expansion: int = 4
    swin_window: int = 8
    mlp_ratio: int = 4
    attn_head_dim: int = 32

    # Phase B
    d: int = 192
    heads: int = 6
    ffn: int = 768
    b2_layers: int = 2
    b3_layers: int = 2
    b5_layers: int = 3
    top_r: int = 32
    deform_levels: int = 3  # L2, L3, L4
    deform_points: int = 4
    l1_adaptive: int = 8
    depth_eps: float = 1e-3  # eq. 26: inverse depth floor, i.e. 1000 m maximum depth
    attn_dropout: float = 0.1  # seed §4.5, training only

    strides: tuple[int, int, int, int] = field(default=(4, 8, 16, 32), init=False)

    def __post_init__(self) -> None:
        self._check_bounds()
        if not (self.window_s > 0 and self.f3_window_s > 0):
            raise ValueError(f"config {self.name!r}: window_s and f3_window_s must be positive "
                             f"(got {self.window_s}, {self.f3_window_s})")
        if self.width < 64 or self.height < 64:
            raise ValueError(
                f"config {self.name!r}: sensor {self.width}x{self.height} is too small; "
                "both sides must be at least 64 pixels"
            )
        if self.d != self.dims[2]:
            raise ValueError(f"config {self.name!r}: d = {self.d} must equal the L3 width "
                             f"dims[2] = {self.dims[2]} (B1 and B4 read L3 without a projection)")
        if self.d % self.heads or self.dims[2] % self.attn_head_dim or self.dims[3] % self.attn_head_dim:
            raise ValueError(f"config {self.name!r}: d = {self.d} must divide into {self.heads} "
                             f"heads and dims[2:] = {self.dims[2:]} into {self.attn_head_dim}-wide heads")
        if self.grid_tokens < self.top_r:
            h4, w4 = self.level_hw(4)
            raise ValueError(
                f"config {self.name!r}: L4 has {w4}x{h4} = {self.grid_tokens} tokens, fewer "
                f"than top_r = {self.top_r}; use a larger sensor or a smaller top_r"
            )

    # ---- derived sizes -------------------------------------------------------------------
    @property
    def f3_hw(self) -> tuple[int, int]:
        """F^3 output (after the stride-2 ds2 stage)."""
        return _ceil_half(self.height), _ceil_half(self.width)

    def level_hw(self, level: int) -> tuple[int, int]:
        """(rows, cols) of pyramid level 1..4."""
        h, w = self.f3_hw
        h, w = _ceil_half(h), _ceil_half(w)  # stem -> L1
        for _ in range(level - 1):
            h, w = _floor_half(h), _floor_half(w)
        return h, w

    @property
    def grid_tokens(self) -> int:
        h4, w4 = self.level_hw(4)
        return h4 * w4

    @property
    def head_dim(self) -> int:
        return self.d // self.heads

    @property
    def time_scale(self) -> float:
        return self.window_s / self.f3_window_s

    @property
    def f3_resolutions(self) -> tuple[tuple[int, int, int], ...]:
        """Per-level (Rx, Ry, Rt) grid resolutions, geometric per axis from ``f3_min_res`` to
        (W/4, H/4, 8) — ARCHITECTURE §6 gives (8,8,1) -> (320,180,8) for 1280x720."""
        finest = (max(self.width // 4, 1), max(self.height // 4, 1), self.f3_time_res)
        res = []
        for lvl in range(self.f3_levels):
            frac = lvl / (self.f3_levels - 1)
            res.append(
                tuple(
                    max(1, int(round(lo * (hi / lo) ** frac))) if hi > lo else hi
                    for lo, hi in zip(self.f3_min_res, finest)
                )
            )
        return tuple(res)

    @property
    def f3_table_rows(self) -> tuple[int, ...]:
        """Rows of each level's dense vertex table: (Rx+1)(Ry+1)(Rt+1)."""
        return tuple((rx + 1) * (ry + 1) * (rt + 1) for rx, ry, rt in self.f3_resolutions)

    # ---- (de)serialisation for checkpoints -----------------------------------------------
    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out.pop("strides")
        return out

    def _check_bounds(self) -> None:
        if not isinstance(self.name, str) or not NAME_PATTERN.fullmatch(self.name):
            raise ValueError(f"config name {self.name!r}: use 1-64 letters, digits, '_', '-' or '.', "
                             "starting with a letter or digit")
        ints = {"width": self.width, "height": self.height, "f3_dim": self.f3_dim, "d": self.d, "ffn": self.ffn,
                "heads": self.heads, "top_r": self.top_r, "deform_points": self.deform_points,
                "b2_layers": self.b2_layers, "b3_layers": self.b3_layers, "b5_layers": self.b5_layers}
        ints.update({f"dims[{i}]": v for i, v in enumerate(self.dims)})
        ints.update({f"depths[{i}]": v for i, v in enumerate(self.depths)})
        limits = {"width": MAX_SENSOR_SIDE, "height": MAX_SENSOR_SIDE, "f3_dim": MAX_WIDTH, "d": MAX_WIDTH,
                  "ffn": 4 * MAX_WIDTH, **{f"dims[{i}]": MAX_WIDTH for i in range(4)}}
        for key, value in ints.items():
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"config {self.name!r}: {key} = {value!r} must be an integer")
            if not 1 <= value <= limits.get(key, MAX_COUNT):
                raise ValueError(f"config {self.name!r}: {key} = {value} is outside 1..{limits.get(key, MAX_COUNT)}")

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls) if f.init}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown configuration fields: {', '.join(unknown)}")
        kwargs = {}
        for k, v in data.items():
            kwargs[k] = tuple(v) if isinstance(v, list) else v
        return cls(**kwargs)

    def describe(self) -> str:
        rows = [f"config {self.name}: sensor {self.width}x{self.height}, "
                f"window {self.window_s * 1e3:.3f} ms (F^3 time scale {self.time_scale:.4f})"]
        h, w = self.f3_hw
        rows.append(f"  F^3 ds2: 64 x {h} x {w}")
        for lvl in range(1, 5):
            h, w = self.level_hw(lvl)
            rows.append(f"  L{lvl}: {self.dims[lvl - 1]} x {h} x {w} (stride {self.strides[lvl - 1]})")
        rows.append(f"  B3 tokens T4 = {self.grid_tokens}, top-R = {self.top_r}")
        return "\n".join(rows)


CONFIGS: dict[str, ModelConfig] = {
    "hd": ModelConfig("hd", 1280, 720),
    "dsec": ModelConfig("dsec", 640, 480),
    "mvsec": ModelConfig("mvsec", 346, 260),
    # Small sensor for fast tests; 160 rows give L3 = 10 rows, so the Swin padding path runs.
    "tiny": ModelConfig("tiny", 256, 160),
    # The committed trained demo checkpoint (artifacts/demo.pt, README "Demo checkpoint"): the
    # tiny sensor at half the seed's widths everywhere (2.8M parameters instead of 11.1M),
    # small enough to train on 2 CPU cores in about an hour and to commit.
    "demo": ModelConfig("demo", 256, 160, f3_dim=32, dims=(32, 64, 96, 192), d=96, heads=3,
                        ffn=384),
}


def get_config(name: str) -> ModelConfig:
    try:
        return CONFIGS[name]
    except KeyError:
        raise KeyError(
            f"unknown configuration {name!r}; choose one of: {', '.join(CONFIGS)}"
        ) from None


def swin_padded(n: int, window: int) -> int:
    return int(math.ceil(n / window) * window)
