"""Loads the compiled EventSPD kernels and returns ``torch.ops.eventspd_plugins``.

``ops()`` gives the op namespace with the same signatures as ``torch.ops.eventspd`` (the
reference ops of model_def/ops.py): ``topr_route``, ``deform_read``, ``event_splat``; and ``convnext_block``, one F^3
ConvNeXt-V2 block fused into two passes (its reference is the PyTorch block, model_def/layers.py).
Importing this module raises ImportError, with the reason, when the extension is not built.
"""
from __future__ import annotations

import torch

try:
    from plugins import _C  # noqa: F401  (loading the library registers the ops)
except ImportError as exc:  # pragma: no cover - depends on the build
    raise ImportError(
        "the EventSPD plugin extension plugins._C is not built or does not load "
        f"({exc}). Build it with `pip install --no-build-isolation -e .` (needs a C++ "
        "compiler and torch at build time) or `python setup.py build_ext --inplace` from the "
        "repository root; a torch or compiler change since the build also requires a rebuild."
    ) from exc

NAMESPACE = "eventspd_plugins"
WITH_CUDA = bool(getattr(_C, "with_cuda", 0))


def ops():
    """``torch.ops.eventspd_plugins``: the compiled ops."""
    return getattr(torch.ops, NAMESPACE)


def convnext_block_supports(channels: int, hidden: int, kernel: int) -> bool:
    """True when the fused ConvNeXt-V2 block kernels take a block of this shape (their limits,
    from plugins/convnext_block/arith.h: registers per lane, the taps in shared memory)."""
    return (1 <= channels <= _C.convnext_max_channels and 1 <= hidden <= _C.convnext_max_hidden
            and kernel % 2 == 1 and kernel <= _C.convnext_max_kernel
            and kernel * kernel * channels <= _C.convnext_max_taps)


def convnext_block_limits() -> str:
    """The limits convnext_block_supports checks, as one line for an error message."""
    return (f"C <= {_C.convnext_max_channels}, E <= {_C.convnext_max_hidden}, odd k <= {_C.convnext_max_kernel}, "
            f"k*k*C <= {_C.convnext_max_taps}")


def has_cuda_kernels() -> bool:
    """True when the extension was built with its CUDA kernels."""
    return WITH_CUDA


def _register_fakes() -> None:
    # Shape functions, so the ops also trace under torch.compile / FakeTensor.
    @torch.library.register_fake(f"{NAMESPACE}::topr_route")
    def _(attn, top_r, grid_w, grid_h, stride):
        B, K = attn.shape[:2]
        return (attn.new_empty((B, K, top_r), dtype=torch.int32),
                attn.new_empty((B, K, top_r, 2), dtype=torch.float32))

    @torch.library.register_fake(f"{NAMESPACE}::deform_read")
    def _(v2, v3, v4, anchors, offsets, logits, strides):
        B, C = v2.shape[:2]
        K, R = offsets.shape[1:3]
        return v2.new_empty((B, K, R, C))

    @torch.library.register_fake(f"{NAMESPACE}::event_splat")
    def _(events, table, width, height, resolutions, time_scale):
        dtype = torch.float64 if table.dtype == torch.float64 else torch.float32
        return table.new_empty((1, 2 * (len(resolutions) // 3), height, width), dtype=dtype)

    @torch.library.register_fake(f"{NAMESPACE}::convnext_block")
    def _(x, dw_weight, dw_bias, ln_weight, ln_bias, w1, b1, gamma, beta, w2, b2, eps):
        return torch.empty_like(x, memory_format=torch.channels_last)


_register_fakes()
