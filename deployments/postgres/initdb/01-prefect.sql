-- Run once by the postgres image on an empty data volume: Prefect's own database,
-- next to the `inferstream` database (POSTGRES_DB) that holds the audit table.
CREATE DATABASE prefect OWNER inferstream;
