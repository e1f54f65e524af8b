"""The fused ConvNeXt-V2 block (plugins/convnext_block), and when the model uses it.

In the "plugin" ops backend a ConvNeXt-V2 block (layers.ConvNeXtV2Block: F^3's six, L1's, L2's)
runs as one op of two passes instead of dwconv, LayerNorm, two GEMMs, GELU and GRN's reductions.
Its reference is the PyTorch block itself, so there is no reference op, and the exported graphs
keep the standard ops unless the export asks for plugin nodes (``exported_as_plugin``, the
``--fused-blocks`` option of ``eventspd-export onnx``): then each block is one
EventSPDConvNeXtBlock node, whose ONNX function body (eventspd_export/export/onnx_functions.py)
is the block in standard ops and whose TensorRT plugin runs these kernels. Used only for inference (the op has no autograd formula), for shapes the
kernels take, in fp32/fp16, and on devices in FUSED_BLOCK_DEVICES: on the CPU its plain loops
are ~3.5x slower than PyTorch's oneDNN convolutions and GEMMs (one HD F^3 block, 640 x 360 x 64,
on this project's 2-core machine: `python scripts/bench_convnext_cpu.py`), so the CPU kernel
serves as the tested reference of the GPU arithmetic and runs only where a test asks for it.
"""

from __future__ import annotations

import contextlib

import torch

from . import ops

FUSED_BLOCK_DEVICES: tuple[str, ...] = ("cuda",)
_EXPORT_AS_PLUGIN = False


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


# ---- ONNX export as a plugin node ---------------------------------------------------------------
@contextlib.contextmanager
def exported_as_plugin(on: bool = True):
    """While on, torch.onnx.export writes each ConvNeXt-V2 block as one EventSPDConvNeXtBlock node
    (inputs: x and the block's ten weights, ``ConvNeXtV2Block.weights``; fields channels, eps)."""
    global _EXPORT_AS_PLUGIN
    saved, _EXPORT_AS_PLUGIN = _EXPORT_AS_PLUGIN, bool(on)
    try:
        yield
    finally:
        _EXPORT_AS_PLUGIN = saved


def exports_as_plugin() -> bool:
    return _EXPORT_AS_PLUGIN and torch.onnx.is_in_onnx_export()


class _BlockExport(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, dw_weight, dw_bias, ln_weight, ln_bias, w1, b1, gamma, beta, w2, b2, channels, eps,
                block):
        with ops.untraced():
            return block.standard_forward(x)

    @staticmethod
    def symbolic(g, x, dw_weight, dw_bias, ln_weight, ln_bias, w1, b1, gamma, beta, w2, b2, channels, eps,
                 block):
        spec = ops.PLUGIN_SPECS["convnext_block"]
        out = g.op(f"{ops.PLUGIN_DOMAIN}::{spec.plugin_name}", x, dw_weight, dw_bias, ln_weight, ln_bias, w1, b1,
                   gamma, beta, w2, b2, **ops.node_attrs("convnext_block", channels=channels, eps=eps))
        out.setType(x.type())
        return out


def export_node(block, x: torch.Tensor) -> torch.Tensor:
    """``block`` on ``x`` as the plugin node (called while exporting, see ``exported_as_plugin``)."""
    return _BlockExport.apply(x, *block.weights(), int(block.dwconv.in_channels), float(block.norm.eps), block)
