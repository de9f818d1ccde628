"""``python3 -m classifier``: the command line of ``cli/main.py``, as the ``classifier`` script runs it."""

import sys

from classifier.cli.main import main

sys.exit(main())
