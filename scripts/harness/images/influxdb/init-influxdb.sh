#!/bin/bash
# First-start initialisation with the official influxdb 1.x image's
# variables. It runs only when the meta directory does not exist yet and
# there is something to do (INFLUXDB_DB, INFLUXDB_ADMIN_USER with auth on, or
# files in /docker-entrypoint-initdb.d). It starts influxd on 127.0.0.1:8086
# alone, creates:
#   INFLUXDB_ADMIN_USER / _PASSWORD        admin (only when HTTP auth is on)
#   INFLUXDB_DB                            a database
#   INFLUXDB_USER / _PASSWORD              ALL on INFLUXDB_DB
#   INFLUXDB_WRITE_USER / _PASSWORD        WRITE on INFLUXDB_DB
#   INFLUXDB_READ_USER / _PASSWORD         READ on INFLUXDB_DB
# (a user's missing password is generated and printed), runs
# /docker-entrypoint-initdb.d/*.sh (sourced) and *.iql (as the admin), and
# stops it again. Users other than the admin are created only with auth on,
# as in the official script.
set -e

auth_enabled=
if [ -n "${INFLUXDB_HTTP_AUTH_ENABLED:-}" ]; then
  echo "$INFLUXDB_HTTP_AUTH_ENABLED" | grep -qi true && auth_enabled=1
elif grep -qiE '^\s*auth-enabled\s*=\s*true' /etc/influxdb/influxdb.conf; then
  auth_enabled=1
fi
init_users=
[ -n "$auth_enabled" ] && [ -n "${INFLUXDB_ADMIN_USER:-}" ] && init_users=1

meta_dir=${INFLUXDB_META_DIR:-/var/lib/influxdb/meta}
initdb_files=$(ls -A /docker-entrypoint-initdb.d 2>/dev/null || true)
if [ -d "$meta_dir" ] || { [ -z "$init_users" ] && [ -z "${INFLUXDB_DB:-}" ] && [ -z "$initdb_files" ]; }; then
  exit 0
fi

random_password() { tr -dc '_A-Za-z0-9-' </dev/urandom | head -c 32; }

create_db="CREATE DATABASE \"${INFLUXDB_DB:-}\""
if [ -n "$init_users" ]; then
  if [ -z "${INFLUXDB_ADMIN_PASSWORD:-}" ]; then
    INFLUXDB_ADMIN_PASSWORD=$(random_password)
    echo "INFLUXDB_ADMIN_PASSWORD:$INFLUXDB_ADMIN_PASSWORD"
  fi
  first_query="CREATE USER \"$INFLUXDB_ADMIN_USER\" WITH PASSWORD '$INFLUXDB_ADMIN_PASSWORD' WITH ALL PRIVILEGES"
elif [ -n "${INFLUXDB_DB:-}" ]; then
  first_query=$create_db
else
  first_query="SHOW DATABASES"
fi

port=8086
INFLUXDB_HTTP_BIND_ADDRESS=127.0.0.1:$port INFLUXDB_HTTP_HTTPS_ENABLED=false influxd "$@" &
pid=$!
influx_cmd=(influx -host 127.0.0.1 -port "$port" -execute)

for i in {30..0}; do
  if "${influx_cmd[@]}" "$first_query" >/dev/null 2>&1; then
    break
  fi
  echo 'influxdb init process in progress...'
  sleep 1
done
if [ "$i" = 0 ]; then
  echo >&2 'influxdb init process failed.'
  exit 1
fi

if [ -n "$init_users" ]; then
  influx_cmd=(influx -host 127.0.0.1 -port "$port" -username "$INFLUXDB_ADMIN_USER" -password "$INFLUXDB_ADMIN_PASSWORD" -execute)
  [ -n "${INFLUXDB_DB:-}" ] && "${influx_cmd[@]}" "$create_db"

  # user kind -> privilege on INFLUXDB_DB
  for kind in USER:ALL WRITE_USER:WRITE READ_USER:READ; do
    var=INFLUXDB_${kind%%:*}
    privilege=${kind#*:}
    name=${!var:-}
    [ -n "$name" ] || continue
    password_var=${var}_PASSWORD
    password=${!password_var:-}
    if [ -z "$password" ]; then
      password=$(random_password)
      echo "$password_var:$password"
    fi
    "${influx_cmd[@]}" "CREATE USER \"$name\" WITH PASSWORD '$password'"
    "${influx_cmd[@]}" "REVOKE ALL PRIVILEGES FROM \"$name\""
    if [ -n "${INFLUXDB_DB:-}" ]; then
      "${influx_cmd[@]}" "GRANT $privilege ON \"$INFLUXDB_DB\" TO \"$name\""
    fi
  done
fi

for f in /docker-entrypoint-initdb.d/*; do
  [ -e "$f" ] || continue
  case "$f" in
    *.sh) echo "$0: running $f"; . "$f" ;;
    *.iql) echo "$0: running $f"; "${influx_cmd[@]}" "$(cat "$f")"; echo ;;
    *) echo "$0: ignoring $f" ;;
  esac
  echo
done

if ! kill -s TERM "$pid" || ! wait "$pid"; then
  echo >&2 'influxdb init process failed. (Could not stop influxdb)'
  exit 1
fi
