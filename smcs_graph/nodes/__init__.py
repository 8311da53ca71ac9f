"""One module per graph node. Each is thin: read state and config, call core and services."""
