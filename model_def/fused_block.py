"""The fused ConvNeXt-V2 block (plugins/convnext_block), and when the model uses it.

In the "plugin" ops backend a ConvNeXt-V2 block (layers.ConvNeXtV2Block: F^3's six, L1's, L2's)
runs as one op of two passes instead of dwconv, LayerNorm, two GEMMs, GELU and GRN's reductions.
Its reference is the PyTorch block itself, so there is no reference op and nothing changes in
the exported graphs. Used only for inference (the op has no autograd formula), for shapes the
kernels take, in fp32/fp16, and on devices in FUSED_BLOCK_DEVICES: on the CPU its plain loops
are ~3.5x slower than PyTorch's oneDNN convolutions and GEMMs (one HD F^3 block, 640 x 360 x 64,
on this project's 2-core machine: `python scripts/bench_convnext_cpu.py`), so the CPU kernel
serves as the tested reference of the GPU arithmetic and runs only where a test asks for it.
"""

from __future__ import annotations

import torch

from . import ops

FUSED_BLOCK_DEVICES: tuple[str, ...] = ("cuda",)


def _data_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype the fused block's data runs in: autocast's where it is on, else x's."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


def applies(x: torch.Tensor, channels: int, hidden: int, kernel: int) -> bool:
    """True when a block of this shape on ``x`` runs as the fused op."""
    if ops.get_backend() != "plugin" or torch.onnx.is_in_onnx_export() or torch.is_grad_enabled():
        return False
    if x.device.type not in FUSED_BLOCK_DEVICES:
        return False
    if _data_dtype(x) not in (torch.float32, torch.float16):  # bf16: PyTorch's block
        return False
    import plugins.torch_ext as ext

    return ext.convnext_block_supports(channels, hidden, kernel)


def convnext_block(x, dw_weight, dw_bias, ln_weight, ln_bias, w1, b1, gamma, beta, w2, b2,
                   eps: float) -> torch.Tensor:
    """One fused ConvNeXt-V2 block; under autocast its data runs in the autocast dtype (as the
    block's convolutions and GEMMs would), the arithmetic in fp32."""
    x = x.to(_data_dtype(x))
    return ops.plugin_ops().convnext_block(x, dw_weight, dw_bias, ln_weight, ln_bias, w1, b1, gamma, beta,
                                           w2, b2, float(eps))
