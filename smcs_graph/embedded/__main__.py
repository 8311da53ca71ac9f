"""`python -m smcs_graph.embedded profile`: reproduce the committed capability matrix."""

import sys

from smcs_graph.embedded.default import main

sys.exit(main())
