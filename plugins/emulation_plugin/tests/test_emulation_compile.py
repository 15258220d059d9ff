"""``torch.compile(fullgraph=True)`` of a module calling the oracle: the custom op and its fake
implementation keep the format code out of the graph. Two families (compiling costs ~10 s each on
a 2-core CPU): ``mp`` (weight-only) and ``nvfp4`` W4A4 (activation QDQ inside the op)."""

from __future__ import annotations

import pytest
import torch

from kernel_core import MPLinearLayerConfig, NvFp4LinearLayerConfig
from kernel_core.formats import make_layer
from kernel_core_emulation.kernels import EmulationMPLinearKernel, EmulationNvFp4LinearKernel


class _Linear(torch.nn.Module):
    def __init__(self, config, kernel) -> None:
        super().__init__()
        self.kernel = kernel
        self.layer = make_layer(config, seed=11)
        self.bias = torch.nn.Parameter(torch.randn(config.out_features), requires_grad=False)
        kernel.process_weights_after_loading(self.layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.kernel.apply_weights(self.layer, x, self.bias) * 2


@pytest.mark.parametrize(
    ("kernel_class", "config"),
    [
        (EmulationMPLinearKernel,
         MPLinearLayerConfig(weight_shape=(64, 128), group_size=32, act_dtype=torch.float32)),
        (EmulationNvFp4LinearKernel,
         NvFp4LinearLayerConfig(weight_shape=(64, 128), act_dtype=torch.float32)),
    ],
    ids=["mp", "nvfp4-w4a4"],
)
def test_compiles_fullgraph_and_matches_eager(kernel_class, config) -> None:
    torch._dynamo.reset()
    module = _Linear(config, kernel_class(config))
    x = torch.randn(2, 3, 128)
    compiled = torch.compile(module, fullgraph=True)
    torch.testing.assert_close(compiled(x), module(x), rtol=0, atol=0)
