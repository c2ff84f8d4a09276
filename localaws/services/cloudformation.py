"""TODO(owner): cloudformation extension (not built yet)."""


def install(runtime) -> None:
    """Not built yet."""
