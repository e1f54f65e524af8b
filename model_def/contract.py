"""The graph contract (ARCHITECTURE §2): the one table of names, dtypes and shapes.

The PyTorch model, the ONNX exporter, the engine builder, the checks, the manifest and the C++
example all read this table. Rule: every precompute output except ``hidden_out`` is a decoder
input with the same name, dtype and shape, so a C++ app binds precompute's output buffers as
decoder's inputs directly.

Exported graphs use batch 1 (one camera, one event window at a time). Dynamic axes are named:
``num_events`` (precompute) and ``num_queries`` (decoder). The PyTorch model itself accepts any
batch size B in place of the leading 1.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import ModelConfig

NUM_EVENTS = "num_events"
NUM_QUERIES = "num_queries"
# Largest K and event count the graphs, engines and commands accept. The kernels index with
# int32: K * R * heads * levels * points * 2 stays below 2^31 up to K = 466k, events * 8
# channels up to 268M. The documented limits leave margin.
K_LIMIT = 65_536
EVENTS_LIMIT = 1 << 26


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # numpy/ONNX style name: "float32"
    shape: tuple[int | str, ...]  # ints are static, strings name a dynamic axis
    doc: str

    def is_dynamic(self) -> bool:
        return any(isinstance(s, str) for s in self.shape)


def _map(name: str, channels: int, hw: tuple[int, int], doc: str) -> TensorSpec:
    return TensorSpec(name, "float32", (1, channels, hw[0], hw[1]), doc)


def shared_tensors(cfg: ModelConfig) -> tuple[TensorSpec, ...]:
    """Precompute outputs that are decoder inputs, in graph order."""
    d, t4 = cfg.d, cfg.grid_tokens
    c1, _, c3, c4 = cfg.dims
    lv = cfg.level_hw
    return (
        _map("l1_map", c1, lv(1), "L1 features: B1's L1 tokens and the query's centre feature"),
        _map("l2_tokens", d, lv(2), "W_v2 L2 (B1's L2 tokens; the 1x1 projection runs in Phase A)"),
        _map("l3_map", c3, lv(3), "L3 features (B1's L3 tokens, identity projection)"),
        _map("l4_tokens", d, lv(4), "W_v4 G4 (B1's L4 tokens; projection in Phase A)"),
        TensorSpec("b3_key1", "float32", (1, t4, d), "B3 layer-1 keys W_K G4 (row-major L4 tokens)"),
        TensorSpec("b3_value1", "float32", (1, t4, d), "B3 layer-1 values W_V G4"),
        TensorSpec("b3_key2", "float32", (1, t4, d), "B3 layer-2 keys"),
        TensorSpec("b3_value2", "float32", (1, t4, d), "B3 layer-2 values"),
        TensorSpec("anchor_feat", "float32", (1, t4, d), "B4 anchor table W_g G4"),
        _map("value_l2", d, lv(2), "B4 value map of L2 (W_V, 128->192)"),
        _map("value_l3", d, lv(3), "B4 value map of L3 (W_V, 192->192)"),
        _map("value_l4", d, lv(4), "B4 value map of G4 (W_V, 384->192)"),
        TensorSpec("calib", "float32", (1, 2), "A4 calibration (s_t, b_t), eq. 4-5"),
    )


def hidden_spec(cfg: ModelConfig, name: str) -> TensorSpec:
    doc = ("ConvGRU state in (zeros for the first window)" if name == "hidden"
           else "ConvGRU state out: feed back as `hidden` for the next window")
    return _map(name, cfg.dims[3], cfg.level_hw(4), doc)


def precompute_inputs(cfg: ModelConfig) -> tuple[TensorSpec, ...]:
    return (
        TensorSpec("events", "float32", (NUM_EVENTS, 4),
                   "one window's events: x pixel, y pixel, t in [0, 1] across the window, "
                   "polarity (unused by F^3). Events off the sensor or non-finite are dropped."),
        hidden_spec(cfg, "hidden"),
    )


def precompute_outputs(cfg: ModelConfig) -> tuple[TensorSpec, ...]:
    return shared_tensors(cfg) + (hidden_spec(cfg, "hidden_out"),)


def decoder_inputs(cfg: ModelConfig) -> tuple[TensorSpec, ...]:
    return shared_tensors(cfg) + (
        TensorSpec("queries", "float32", (1, NUM_QUERIES, 2),
                   "query pixels (u, v) in sensor coordinates"),
    )


def decoder_outputs(cfg: ModelConfig) -> tuple[TensorSpec, ...]:
    return (
        TensorSpec("depth", "float32", (1, NUM_QUERIES), "metric depth in metres, eq. 26"),
        TensorSpec("inv_depth", "float32", (1, NUM_QUERIES), "predicted inverse depth rho"),
    )


SHARED_NAMES = tuple(s.name for s in shared_tensors(ModelConfig("names", 256, 256)))
