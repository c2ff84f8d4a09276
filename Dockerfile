# One image for the team set-up (docker-compose.yaml): Airflow components and localaws.
FROM python:3.11-slim
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1 AIRFLOW_HOME=/opt/airflow
WORKDIR /opt/ml-workflow-aws
COPY requirements.lock pyproject.toml README.md ./
# torch's CPU build comes from the PyTorch CPU wheel index (set PIP_EXTRA_INDEX_URL to it).
ARG PIP_EXTRA_INDEX_URL
RUN pip install --no-cache-dir --no-deps -r requirements.lock && pip check
COPY dags ./dags
COPY include ./include
COPY lambdas ./lambdas
COPY localaws ./localaws
COPY plugins ./plugins
COPY scripts ./scripts
RUN pip install --no-cache-dir --no-deps --no-build-isolation -e . \
    && useradd --uid 50000 --create-home airflow && mkdir -p /opt/airflow \
    && chown -R airflow /opt/airflow
USER airflow
