-- The Prefect server's database beside MLflow's (POSTGRES_DB creates `mlflow`).
CREATE DATABASE prefect OWNER avar;
