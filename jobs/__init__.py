"""Driver-side jobs: one thin module per pipeline stage plus shared session/config/Delta helpers."""
