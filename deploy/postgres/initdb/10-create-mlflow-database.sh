#!/bin/sh
# Runs once, when the postgres container initialises an empty data volume (the image's
# /docker-entrypoint-initdb.d): creates MLflow's backend-store database next to kerasyard's
# jobs database ($POSTGRES_DB). On a volume created before this script existed, run it by hand:
#   docker compose exec postgres sh /docker-entrypoint-initdb.d/10-create-mlflow-database.sh
set -eu
db="${MLFLOW_POSTGRES_DB:-mlflow}"
psql -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" --dbname "${POSTGRES_DB:-postgres}" \
  --set db="$db" <<'SQL'
SELECT format('CREATE DATABASE %I', :'db')
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db')\gexec
SQL
echo "database $db is there"
