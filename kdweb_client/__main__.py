"""``python -m kdweb_client``: the same as the ``kdweb`` command."""

import sys

from kdweb_client.cli import main

sys.exit(main())
