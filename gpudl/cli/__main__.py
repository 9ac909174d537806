"""``python -m gpudl.cli``: the same as the ``gpudl`` console script."""

import sys

from gpudl.cli import main

sys.exit(main())
