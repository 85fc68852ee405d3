"""The ``icechart`` command line: thin Click commands over the library."""


def main() -> None:  # pragma: no cover - console entry
    """Console entry: install the signal handlers, then import and run the command group."""
    from icechart.ops.signals import install

    install()
    from icechart.cli.main import main as run

    run()
