"""ml_workflow: the library behind the ml-workflow-aws DAGs.

Configuration, the CIFAR-100 format, the S3 layout, SageMaker request builders, the Step
Functions definition and the monitoring analysis live here as plain, unit-tested Python;
the DAG files in ``dags/`` only wire them to Airflow operators.
"""
