# MLflow tracking server with PostgreSQL and S3 (MinIO) support and its basic-auth app (mlflow[auth]).
FROM python:3.11-slim
RUN pip install --no-cache-dir "mlflow[auth]==3.17.2" psycopg2-binary boto3
