"""python -m chaos: the chaos run (chaos.harness; docs/chaos.md)."""

import sys

from chaos.harness import main

sys.exit(main())
