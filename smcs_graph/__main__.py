"""`python -m smcs_graph` runs the `smcs` command line."""

import sys

from smcs_graph.cli import main

sys.exit(main())
