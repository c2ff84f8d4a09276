"""TODO(owner): sns_mail extension (not built yet)."""


def install(runtime) -> None:
    """Not built yet."""
