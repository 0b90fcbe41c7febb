"""CLI subcommands of stage.app (registered by stage.cli). Being written; see the open issue."""


def register(sub) -> None:
    """Add this package's subcommands to the `stage` parser."""
