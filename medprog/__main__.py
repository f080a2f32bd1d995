"""``python -m medprog``: the same CLI as the ``medprog`` command (and what ``accelerate launch -m medprog`` runs)."""

from medprog.cli import app

if __name__ == "__main__":
    app(prog_name="medprog")
