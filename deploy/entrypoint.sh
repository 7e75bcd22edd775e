#!/usr/bin/env bash
# Entrypoint of the nightly-tfx image (deploy/Dockerfile). UNTESTED in a container: no Docker
# engine on the machines this project is built on.
#
# Secrets arrive as files (compose secrets under /run/secrets/); the programs want them in the
# environment. For each NAME below, when NAME_FILE is set and NAME is not, NAME is exported with the
# file's content (trailing newline dropped) and NAME_FILE is unset: the same convention as the
# postgres and mariadb images. Then the command runs.
set -euo pipefail

SECRET_VARIABLES=(
  AIRFLOW__DATABASE__SQL_ALCHEMY_CONN
  AIRFLOW__CELERY__RESULT_BACKEND
  AIRFLOW__CORE__FERNET_KEY
  AIRFLOW__API_AUTH__JWT_SECRET
  AIRFLOW__API__SECRET_KEY
  MLOPS_MLMD_PASSWORD
)

for name in "${SECRET_VARIABLES[@]}"; do
  file_var="${name}_FILE"
  file="${!file_var:-}"
  if [[ -n "$file" ]]; then
    if [[ -n "${!name:-}" ]]; then
      echo "entrypoint: both $name and $file_var are set; use one" >&2
      exit 2
    fi
    if [[ ! -r "$file" ]]; then
      echo "entrypoint: $file_var names $file, which this container cannot read (deploy/init-secrets.sh writes it)" >&2
      exit 2
    fi
    value="$(cat "$file")"
    export "$name=$value"
    unset "$file_var"
  fi
done

exec "$@"
