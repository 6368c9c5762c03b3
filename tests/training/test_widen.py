"""Net2WiderNet growth of the compact CNN computes the same function, then trains apart."""

from __future__ import annotations

import pytest
import torch

from training.nets.compact import CompactCNN
from training.train import precision
from training.train.loop import autocast_dtype
from training.train.widen import widen_compact_block2


def test_widened_compact_cnn_gives_the_same_outputs() -> None:
    torch.manual_seed(0)
    narrow = CompactCNN(input_size=32, widths=(8, 16), kernels=(3, 3), fc=32)
    narrow.train()
    narrow(torch.randn(64, 1, 32, 32))  # non-trivial batch-norm statistics
    narrow.eval()
    wide = CompactCNN(input_size=32, widths=(8, 40), kernels=(3, 3), fc=32).eval()
    wide.load_state_dict(widen_compact_block2(narrow.state_dict(), 40, noise=0.0))
    x = torch.randn(8, 1, 32, 32)
    torch.testing.assert_close(wide(x), narrow(x), rtol=1e-4, atol=1e-5)

    noisy = CompactCNN(input_size=32, widths=(8, 40), kernels=(3, 3), fc=32).eval()
    noisy.load_state_dict(widen_compact_block2(narrow.state_dict(), 40, noise=0.01))
    assert not torch.equal(noisy(x), narrow(x))  # the copies differ a little
    torch.testing.assert_close(noisy(x), narrow(x), rtol=0.1, atol=0.05)


def test_block2_cannot_shrink() -> None:
    state = CompactCNN(input_size=32, widths=(8, 16), kernels=(3, 3), fc=32).state_dict()
    with pytest.raises(ValueError, match="narrow"):
        widen_compact_block2(state, 8)


def test_precision_rule() -> None:
    cpu = torch.device("cpu")
    assert autocast_dtype(cpu, "fp32") is None
    assert autocast_dtype(cpu, "bf16") is torch.bfloat16
    # auto: bfloat16 only where the CPU computes it natively
    assert (autocast_dtype(cpu, "auto") is torch.bfloat16) is precision.native_bf16()
    with pytest.raises(ValueError, match="precision"):
        autocast_dtype(cpu, "fp16")
