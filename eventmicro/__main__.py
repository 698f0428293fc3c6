"""``python -m eventmicro`` runs the command line."""

import sys

from eventmicro._cli import main

sys.exit(main())
