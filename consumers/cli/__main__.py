"""``python -m consumers.cli``: the same as the ``gopwatch`` command."""

from consumers.cli import main

main()
