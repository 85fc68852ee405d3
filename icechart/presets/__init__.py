"""Shipped training recipes (``[train]`` TOML), found with importlib.resources by name."""
