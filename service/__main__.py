"""`python -m service` is the `fer-service` command."""

import sys

from service.cli import main

sys.exit(main())
