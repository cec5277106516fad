"""The running service: its wiring (service.py), the HTTP application (app.py), maintenance."""
