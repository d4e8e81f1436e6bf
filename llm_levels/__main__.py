"""``python -m llm_levels``: the command line (see ``llm_levels.cli``)."""

from .cli import main

raise SystemExit(main())
