"""``python -m bench.scale``: see :mod:`bench.scale.driver`."""

from __future__ import annotations

from bench.scale.driver import main

raise SystemExit(main())
