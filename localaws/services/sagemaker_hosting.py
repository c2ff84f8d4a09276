"""TODO(owner): sagemaker_hosting extension (not built yet)."""


def install(runtime) -> None:
    """Not built yet."""
