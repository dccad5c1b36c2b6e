"""`python -m vggt ...` is the `vggt` command."""

import sys

from vggt.cli.main import main

sys.exit(main())
