"""python -m tools.local_platform: see cli.py."""

import sys

from tools.local_platform.cli import main

sys.exit(main())
