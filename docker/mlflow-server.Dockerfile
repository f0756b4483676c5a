# The tracking server of compose.yaml: MLflow with the PostgreSQL driver and the S3 client.
#
# BASE_IMAGE: any Debian-based image with Python 3.11 as `python3` (and its venv module).
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

# A venv of its own: Debian's own Python refuses `pip install` into the system (PEP 668).
RUN python3 -m venv /opt/mlflow \
    && /opt/mlflow/bin/pip install --no-cache-dir mlflow==3.17.2 psycopg2-binary==2.9.13 boto3==1.44.8 \
    && useradd --create-home --uid 1000 mlflow
ENV PATH="/opt/mlflow/bin:${PATH}"

USER mlflow
WORKDIR /home/mlflow
EXPOSE 5000
# compose.yaml gives the command (`mlflow server ...`) and its environment.
CMD ["mlflow", "server", "--host", "0.0.0.0", "--port", "5000"]
