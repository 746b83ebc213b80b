"""float32 linear layers whose weights are laid out once for oneDNN, for generating on a CPU.

torch's float32 ``linear`` on a CPU calls MKL's sgemm, which packs the weight matrix at every
call. oneDNN's linear can take a weight reordered once up front, which makes a decoding step's
linear layers cheaper at every batch size (``benchmarks/packed_linear.py``, docs/performance.md).
This pair of ops is what ``torch.compile`` itself emits for a float32 linear on a CPU when the
batch size varies (``torch/_inductor/fx_passes/mkldnn_fusion.py``); calling them directly gets
the same without compiling the model for every batch shape.
"""

from __future__ import annotations

import torch

PACKED_FOR_BATCH = 16  # the local generator's largest batch: oneDNN picks the weight layout for it


class PackedLinear(torch.nn.Module):
    """``torch.nn.Linear`` for inference, its weight held in oneDNN's layout (opaque, not saveable)."""

    def __init__(self, linear: torch.nn.Linear, batch: int = PACKED_FOR_BATCH):
        """Takes ``linear``'s weight, reordered for batches of up to ``batch`` rows, and its bias."""
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        # Plain attributes, not parameters: nothing may move, train or save an opaque oneDNN tensor.
        self.packed_weight = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), batch)
        self.packed_bias = None if linear.bias is None else linear.bias.detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` times the weight, plus the bias, through oneDNN's linear."""
        return torch.ops.mkldnn._linear_pointwise(x, self.packed_weight, self.packed_bias, "none", [], "")

    def extra_repr(self) -> str:
        """The layer's sizes and whether it has a bias, as ``nn.Linear`` shows them."""
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.packed_bias is not None}"


def can_pack(model: torch.nn.Module) -> bool:
    """float32 on a CPU, with torch built with oneDNN. Other dtypes are not measured, so they keep
    ``nn.Linear``."""
    weight = next(model.parameters())
    return (
        weight.dtype == torch.float32
        and weight.device.type == "cpu"
        and torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    )


def pack_linear_layers(model: torch.nn.Module) -> int:
    """Replace every ``nn.Linear`` of an inference model by a :class:`PackedLinear`, in place, where
    :func:`can_pack`; returns how many were replaced."""
    if not can_pack(model):
        return 0
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is torch.nn.Linear:  # subclasses (LoRA layers, quantized ones) do more than a matmul
                setattr(parent, name, PackedLinear(child))
                replaced += 1
    return replaced
