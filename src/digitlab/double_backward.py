"""Second derivatives for the hand-written CPU layers (`conv_pool`, `gan`).

Their backward passes call compiled kernels or oneDNN directly, so they have no graph of their
own. When a gradient of their gradient is asked for (`create_graph=True`: a gradient penalty,
`torch.autograd.gradgradcheck`), the backward recomputes the layer with PyTorch's own
operations and differentiates that instead: the same function, so the same gradients, and
autograd records the graph the second derivative needs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch


def reference_grads(
    forward: Callable[..., torch.Tensor],
    inputs: Sequence[torch.Tensor],
    needs: Sequence[bool],
    grad: torch.Tensor,
) -> tuple[torch.Tensor | None, ...]:
    """Gradients of `forward(*inputs)` against `grad` for the inputs that `needs` marks (None for
    the others), with `create_graph=True`. Call it inside an autograd.Function's backward when
    `torch.is_grad_enabled()`; `inputs` are its saved tensors, `needs` its needs_input_grad."""
    wanted = [t for t, need in zip(inputs, needs, strict=True) if need]
    if not wanted:
        return tuple(None for _ in inputs)
    with torch.enable_grad():
        out = forward(*inputs)
    found = iter(torch.autograd.grad(out, wanted, grad, create_graph=True))
    return tuple(next(found) if need else None for need in needs)
