"""Group commit, the durable queue, the claim and the worker pool."""
