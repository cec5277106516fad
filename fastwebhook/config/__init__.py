"""The TOML config: its model (model.py), its loader (loader.py, workflows.py), units."""
