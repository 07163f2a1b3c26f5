# The MLflow tracking server of the compose stack: Postgres for runs and the registry,
# an S3-compatible store for artifacts (proxied, so clients need no S3 credentials).
FROM python:3.11.14-slim-bookworm

RUN pip install --no-cache-dir "mlflow[auth]==3.17.2" "psycopg[binary]==3.3.9" "boto3==1.43.117" \
    && useradd --uid 1000 --create-home mlflow \
    && mkdir /mlflow-auth && chown 1000:1000 /mlflow-auth
COPY mlflow-auth.ini /etc/mlflow/auth.ini
ENV MLFLOW_AUTH_CONFIG_PATH=/etc/mlflow/auth.ini
USER 1000:1000
EXPOSE 5000
HEALTHCHECK --interval=10s --timeout=5s --retries=12 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:5000/health')"]
ENTRYPOINT ["mlflow", "server"]
