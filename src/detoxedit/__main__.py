"""`python -m detoxedit` runs the CLI."""

from detoxedit.cli import main

main()
