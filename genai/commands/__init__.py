"""The command groups of ``genai``: one module each, with ``register(subparsers)`` setting a
``handler(args) -> exit code`` on its parsers; ``genai.cli`` assembles them (``GROUPS``), with the
shared validators, help formatter and batch loop. ``jobs`` maps inputs to output paths."""
