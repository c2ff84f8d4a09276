"""TODO(owner): stepfunctions extension (not built yet)."""


def install(runtime) -> None:
    """Not built yet."""
