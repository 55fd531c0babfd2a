"""``python -m cloudlulc.cli``: the ``cloudlulc`` command."""

import sys

from cloudlulc.cli import main

sys.exit(main())
