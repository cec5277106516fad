"""The process model: the server's lifecycle, its worker processes and their supervisor, systemd."""
