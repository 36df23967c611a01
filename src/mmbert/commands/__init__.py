"""One module per ``mmbert`` sub-command, each with ``register(subparsers)``."""
