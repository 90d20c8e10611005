"""Server-Sent Events for Starlette and FastAPI, as an explicit state machine on anyio."""

from __future__ import annotations

__version__ = "0.1.0"
