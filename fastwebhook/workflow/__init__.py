"""Workflows at run time: the runner, templates and the node registry."""
