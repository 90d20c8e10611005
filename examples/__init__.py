"""Runnable examples; ``examples.demo_app`` is what ``scripts/demo.sh`` serves."""
