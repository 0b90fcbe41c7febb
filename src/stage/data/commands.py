"""CLI subcommands of stage.data (registered by stage.cli). Being written; see the open issue."""


def register(sub) -> None:
    """Add this package's subcommands to the `stage` parser."""
