"""``python -m facial_demographics`` runs the command line."""

from .cli import app

app(prog_name="facial-demographics")
