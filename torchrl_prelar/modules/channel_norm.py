"""RMS normalisation over the channels of ``[N, C, H, W]`` maps, with a hand-written backward.

TorchRL's DreamerV3 image encoder and decoder normalise each pixel's channel vector with
``_DreamerV3ChannelRMSNorm``: it moves the channels last, calls ``F.rms_norm`` and moves them
back. On a CPU, autograd then records a chain of element-wise kernels over the largest feature
maps of the model, several of them on a permuted (strided) view.
:class:`ChannelRMSNorm` computes the same function (fp32 arithmetic, output in the input's
dtype) with one saved statistic and a closed-form backward, reducing over dimension ``-3``
in place. :func:`use_channel_rms_norm` puts it into a built TorchRL encoder or decoder; the
parameter names stay as they were, so state dicts load either way.
"""

from __future__ import annotations

import torch
from torch import nn
from torchrl.modules.models.model_based import _DreamerV3ChannelRMSNorm


class _ChannelRMSNormFunction(torch.autograd.Function):
    """``y = x * rsqrt(mean_c(x^2) + eps) * w`` over dimension -3, computed in fp32."""

    @staticmethod
    def forward(ctx, value: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        value32 = value.float()
        inv_rms = torch.rsqrt(value32.square().mean(-3, keepdim=True) + eps)
        ctx.save_for_backward(value, weight, inv_rms)
        return (value32 * inv_rms * weight.float()[:, None, None]).to(value.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:
        value, weight, inv_rms = ctx.saved_tensors
        normed = value.float() * inv_rms
        grad32 = grad.float()
        grad_weight = None
        if ctx.needs_input_grad[1]:
            dims = [dim for dim in range(grad32.dim()) if dim != grad32.dim() - 3]
            grad_weight = (grad32 * normed).sum(dims).to(weight.dtype)
        grad_value = None
        if ctx.needs_input_grad[0]:
            grad_normed = grad32 * weight.float()[:, None, None]
            projection = (grad_normed * normed).mean(-3, keepdim=True)
            grad_value = ((grad_normed - normed * projection) * inv_rms).to(value.dtype)
        return grad_value, grad_weight, None


class ChannelRMSNorm(nn.Module):
    """RMS normalisation of the channel vector of every pixel of ``[..., C, H, W]`` maps.

    Computes what TorchRL's DreamerV3 channel norm computes (to float rounding), with a
    closed-form backward (see the module docstring).

    Args:
        channels (int): the size of dimension -3.
        eps (float, optional): added to the mean square. Defaults to ``1e-4``.

    Examples:
        >>> norm = ChannelRMSNorm(4)
        >>> out = norm(torch.randn(2, 4, 3, 3))
        >>> torch.allclose(out.square().mean(-3), torch.ones(2, 3, 3), atol=1e-3)
        True
    """

    def __init__(self, channels: int, eps: float = 1e-4):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))

    def forward(self, value: torch.Tensor) -> torch.Tensor:
        return _ChannelRMSNormFunction.apply(value, self.weight, self.eps)


def use_channel_rms_norm(module: nn.Module) -> int:
    """Replace every TorchRL DreamerV3 channel norm inside ``module`` by :class:`ChannelRMSNorm`.

    The new norms take over the existing ``weight`` parameters (the same tensors), so the
    module's parameters, their names and its state dict are unchanged.

    Args:
        module (nn.Module): e.g. a :class:`~torchrl.modules.DreamerV3ImageEncoder`.

    Returns:
        The number of norms replaced.

    Examples:
        >>> from torchrl.modules import DreamerV3ImageEncoder
        >>> encoder = DreamerV3ImageEncoder(depth=4, mults=(1, 2))
        >>> names = [name for name, _ in encoder.named_parameters()]
        >>> use_channel_rms_norm(encoder), [name for name, _ in encoder.named_parameters()] == names
        (2, True)
    """
    replaced = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, _DreamerV3ChannelRMSNorm):
                norm = ChannelRMSNorm(child.weight.shape[0], child.eps)
                norm.weight = child.weight
                setattr(parent, name, norm)
                replaced += 1
    return replaced
