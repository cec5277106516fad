"""The admin API, the executions page and the records they show; workflows stored through the API."""
