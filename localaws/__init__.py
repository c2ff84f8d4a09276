"""localaws: an embedded AWS runtime for ml-workflow-aws.

moto speaks the AWS APIs; localaws starts moto's server and adds the compute moto lacks:
Lambda handlers really run (warm worker processes), SageMaker training jobs really train and
endpoints really serve (with Data Capture), Step Functions executions really execute, SNS
email really arrives (in a local SMTP sink), and S3 survives a restart.

localaws emulates AWS, not our product: it never imports ``dags``, ``include`` or
``ml_workflow``.
"""

__all__ = ["__version__"]
__version__ = "0.1.0"
