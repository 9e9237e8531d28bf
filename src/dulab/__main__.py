"""``python -m dulab`` runs the command line."""

import sys

from dulab.cli import main

sys.exit(main())
