#!/usr/bin/env bash
# Writes the secrets deploy/compose.yaml reads, one file each under deploy/secrets/ (or $SECRETS_DIR):
# random passwords and keys, and the two Airflow connection URLs built from the PostgreSQL password.
# A file that exists is kept, so running it again changes nothing. The folder is mode 700 (only you
# on this host); the files are mode 644 because compose mounts each file as it is into containers
# whose programs run as other users (postgres, grafana, nobody). Never committed: deploy/.gitignore.
#
# Checked by tests/test_deploy.py (it runs this script into a temporary folder).
set -euo pipefail

dir="${SECRETS_DIR:-$(cd "$(dirname "$0")" && pwd)/secrets}"
mkdir -p "$dir"
chmod 700 "$dir"

random_hex() {  # $1 bytes of randomness as hex: safe inside URLs without escaping
  od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'
}

put() {  # put NAME VALUE: writes the file unless it exists
  local path="$dir/$1"
  if [[ -e "$path" ]]; then
    echo "kept    $path"
    return
  fi
  (umask 022 && printf '%s' "$2" > "$path.tmp")
  chmod 644 "$path.tmp"
  mv "$path.tmp" "$path"
  echo "wrote   $path"
}

put postgres_password "$(random_hex 24)"
postgres_password="$(cat "$dir/postgres_password")"
put airflow_db_conn "postgresql+psycopg2://airflow:${postgres_password}@postgres:5432/airflow"
put airflow_celery_result_backend "db+postgresql://airflow:${postgres_password}@postgres:5432/airflow"
# Fernet key: 32 random bytes, URL-safe base64.
put airflow_fernet_key "$(head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '\n')"
put airflow_jwt_secret "$(random_hex 32)"
put airflow_api_secret_key "$(random_hex 32)"
put mlmd_password "$(random_hex 24)"
put grafana_admin_password "$(random_hex 16)"
put webhook_secret "$(random_hex 32)"
