"""``python -m eventmicro`` runs the command line."""

import sys

from eventmicro.cli.main import main

sys.exit(main())
