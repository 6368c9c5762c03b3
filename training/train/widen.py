"""Net2WiderNet (Chen, Goodfellow, Shlens, ICLR 2016) for the compact CNN's second block.

A trained compact CNN grows into a wider one that computes the same function: every new
channel of block 2 copies an existing one (its filters and batch-norm parameters), and the
layers that read those channels divide the weights of each copied channel by its number of
copies. Fine-tuning then starts at the trained model's accuracy with more capacity, for a
fraction of the cost of training the wider network from scratch. A little noise on the
copies' filters lets them drift apart (dropout does the rest).
"""

from __future__ import annotations

import torch

# Layer names in CompactCNN's state_dict (training/nets/compact.py).
CONV_A, BN_A, CONV_B, BN_B = "features.7", "features.8", "features.10", "features.11"
FC = "classifier.2"
BN_PARAMS = ("weight", "bias", "running_mean", "running_var")


def widen_compact_block2(
    state: dict[str, torch.Tensor], width: int, seed: int = 0, noise: float = 0.01
) -> dict[str, torch.Tensor]:
    """A state_dict of the same CompactCNN with block 2 widened to `width` channels."""
    old = state[f"{CONV_A}.weight"].shape[0]
    if width < old:
        raise ValueError(f"cannot narrow block 2 from {old} to {width} channels")
    gen = torch.Generator().manual_seed(seed)
    extra = torch.randint(0, old, (width - old,), generator=gen)
    g = torch.cat([torch.arange(old), extra])  # new channel -> the old channel it copies
    count = torch.bincount(g, minlength=old).to(torch.float32)
    share = (1.0 / count)[g]  # each copy carries 1/count of what its original sent on

    out = dict(state)
    conv_a = state[f"{CONV_A}.weight"][g].clone()
    copies = torch.zeros(width, dtype=torch.bool)
    copies[old:] = True
    conv_a[copies] += noise * conv_a.std() * torch.randn(conv_a[copies].shape, generator=gen)
    out[f"{CONV_A}.weight"] = conv_a
    conv_b = state[f"{CONV_B}.weight"][g][:, g] * share.view(1, -1, 1, 1)
    out[f"{CONV_B}.weight"] = conv_b
    for bn in (BN_A, BN_B):
        for p in BN_PARAMS:
            out[f"{bn}.{p}"] = state[f"{bn}.{p}"][g].clone()
    fc = state[f"{FC}.weight"]
    side2 = fc.shape[1] // old
    fc4 = fc.view(fc.shape[0], old, side2)[:, g] * share.view(1, -1, 1)
    out[f"{FC}.weight"] = fc4.reshape(fc.shape[0], width * side2)
    return out
