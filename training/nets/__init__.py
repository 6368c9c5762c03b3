"""Networks, one module per method, and the registry that builds them by name.

Every network module depends on torch only, so it can ship inside a `.mar`; each has a
`build(**kwargs)` factory, which handlers call with the archive's `net.kwargs`.
"""

from __future__ import annotations

import importlib
from typing import Any

from torch import nn


def build_net(name: str, kwargs: dict[str, Any]) -> nn.Module:
    """Instantiate `training.nets.<name>.build(**kwargs)`."""
    module = importlib.import_module(f"training.nets.{name}")
    net: nn.Module = module.build(**kwargs)
    return net
