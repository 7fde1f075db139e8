"""``python -m cli``: the same as the ``impression-gateway`` command."""

import sys

from cli.main import main

sys.exit(main())
