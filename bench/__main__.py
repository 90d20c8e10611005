"""``python -m bench``: run the whole suite and print the Markdown table."""

from __future__ import annotations

from bench.driver import main

raise SystemExit(main())
