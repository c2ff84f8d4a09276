"""TODO(owner): s3_persistence extension (not built yet)."""


def install(runtime) -> None:
    """Not built yet."""
