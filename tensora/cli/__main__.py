"""``python -m tensora.cli``: the same as the ``tensora`` script."""

import sys

from . import main

sys.exit(main())
