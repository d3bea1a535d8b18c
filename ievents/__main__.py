from ievents.cli import app

app(prog_name="ievents")
