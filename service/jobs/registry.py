"""Every kind of job, by name: what `execute` and the workers know how to run."""

from __future__ import annotations

from service.jobs.frontalize import FRONTALIZE
from service.jobs.kinds import JobKind
from service.jobs.transfer import TRANSFER
from service.jobs.video import VIDEO

KINDS: dict[str, JobKind] = {kind.name: kind for kind in (TRANSFER, FRONTALIZE, VIDEO)}
