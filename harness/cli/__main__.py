"""``python -m harness.cli`` is the ``kairos`` command."""

import sys

from harness.cli import main

sys.exit(main())
