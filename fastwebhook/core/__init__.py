"""What every subsystem uses: errors and execution ids."""
