"""`python -m core ...`: the command-line interface."""

from core.cli import main

raise SystemExit(main())
