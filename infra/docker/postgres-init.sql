-- Two databases on one PostgreSQL: Prefect's and MLflow's (users come from the environment).
CREATE DATABASE prefect;
CREATE DATABASE mlflow;
