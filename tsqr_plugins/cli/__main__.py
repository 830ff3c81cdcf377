import sys

from tsqr_plugins.cli import main

sys.exit(main())
