#!/usr/bin/env bash
# Runs every test of prognos: Rust unit tests, end-to-end tests against the real server with
# real clients (tokio-postgres, psql, pgjdbc), and the Python client tests (psycopg, ADBC
# Flight SQL, pyarrow.flight, S3 through moto).
#
# Installs what the tests need when it is missing: Debian packages (psql, pgjdbc, a JDK) when
# run as root, Python packages with pip. Set PROGNOS_SKIP_INSTALL=1 to skip that step.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/prognos-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

install_prerequisites() {
  local need=()
  command -v psql >/dev/null 2>&1 || need+=(postgresql-client)
  [ -f /usr/share/java/postgresql.jar ] || need+=(libpostgresql-jdbc-java)
  command -v javac >/dev/null 2>&1 || need+=(default-jdk-headless)
  if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      echo "installing: ${need[*]}"
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    else
      echo "missing system packages: ${need[*]} (install them, or run as root with apt-get)" >&2
      exit 1
    fi
  fi
  python3 -m pip install -q --disable-pip-version-check -r tests/python/requirements.txt
}

if [ "${PROGNOS_SKIP_INSTALL:-0}" != 1 ]; then
  install_prerequisites
fi

# Clients must be present: a missing one fails the run instead of skipping its test.
export PROGNOS_REQUIRE_CLIENTS=1
export PROGNOS_BIN="$CARGO_TARGET_DIR/debug/prognos"

cargo build --workspace --all-targets
cargo test --workspace -- --test-threads 2
python3 -m pytest tests/python -q -p no:cacheprovider
