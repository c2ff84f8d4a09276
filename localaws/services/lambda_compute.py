"""TODO(owner): lambda_compute extension (not built yet)."""


def install(runtime) -> None:
    """Not built yet."""
