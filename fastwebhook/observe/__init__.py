"""What an operator reads: Prometheus metrics and the JSON log."""
