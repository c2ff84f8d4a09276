"""TODO(owner): sagemaker_training extension (not built yet)."""


def install(runtime) -> None:
    """Not built yet."""
