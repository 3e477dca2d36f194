"""``python -m edgeq.cli``: the command line, as the ``edgeq`` script runs it."""

from edgeq.cli import main

main()
