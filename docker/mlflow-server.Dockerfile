# The tracking server of compose.yaml: MLflow with the PostgreSQL driver and the S3 client.
FROM python:3.11-slim

RUN pip install --no-cache-dir mlflow==3.17.2 psycopg2-binary==2.9.13 boto3==1.44.8 \
    && useradd --create-home --uid 1000 mlflow

USER mlflow
WORKDIR /home/mlflow
EXPOSE 5000
# compose.yaml gives the command (`mlflow server ...`) and its environment.
CMD ["mlflow", "server", "--host", "0.0.0.0", "--port", "5000"]
