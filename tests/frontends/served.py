"""What the tests of tests/frontends share besides fixtures: the running gateway's type."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data"
#: The default classifier of the tests' gateway, other than the defaults' `derl`.
GATEWAY_DEFAULT = "compact"


@dataclass(frozen=True)
class Gateway:
    """A running `fer-service serve`: its base URL (no trailing slash) and model store."""

    url: str
    model_store: Path
