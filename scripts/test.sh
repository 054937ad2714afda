#!/usr/bin/env bash
# Runs every test of prognos: Rust unit tests, end-to-end tests against the real server with
# real clients (tokio-postgres, psql, pgjdbc), and the Python client tests (psycopg, ADBC
# Flight SQL, pyarrow.flight, S3 through moto).
#
# Installs what the tests need when it is missing: Debian packages (psql, pgjdbc, a JDK,
# PostgreSQL 15 for the golden files, the venv module) when run as root, and the pinned Python packages of tests/python/requirements.txt
# into a virtual environment ($PROGNOS_VENV, default .venv). Set PROGNOS_SKIP_INSTALL=1 to skip
# that step.
#
# It builds into the same target directory as `cargo run` ($CARGO_TARGET_DIR, default
# ./target), so the server built by the README's first command is the one the tests start.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
venv="${PROGNOS_VENV:-$PWD/.venv}"
requirements=tests/python/requirements.txt

install_system_packages() {
  local need=()
  command -v psql >/dev/null 2>&1 || need+=(postgresql-client)
  [ -f /usr/share/java/postgresql.jar ] || need+=(libpostgresql-jdbc-java)
  command -v javac >/dev/null 2>&1 || need+=(default-jdk-headless)
  # The golden files of tests/slt/postgres run against a real PostgreSQL 15 as well.
  [ -x /usr/lib/postgresql/15/bin/initdb ] || need+=(postgresql-15)
  # The TLS tests make their certificates with the openssl command.
  command -v openssl >/dev/null 2>&1 || need+=(openssl)
  python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
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
}

# The virtual environment is (re)filled when the pinned requirements change.
install_python_packages() {
  local stamp="$venv/.requirements"
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  if ! cmp -s "$requirements" "$stamp"; then
    "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$requirements"
    cp "$requirements" "$stamp"
  fi
}

if [ "${PROGNOS_SKIP_INSTALL:-0}" != 1 ]; then
  install_system_packages
  install_python_packages
fi
if [ ! -x "$venv/bin/python" ]; then
  echo "no Python virtual environment at $venv (run without PROGNOS_SKIP_INSTALL=1)" >&2
  exit 1
fi

# Clients must be present: a missing one fails the run instead of skipping its test.
export PROGNOS_REQUIRE_CLIENTS=1
# ONNX models run on the ONNX Runtime library of the venv's `onnxruntime` wheel.
if [ -z "${ORT_DYLIB_PATH:-}" ]; then
  ORT_DYLIB_PATH="$("$venv/bin/python" -c 'import glob, os, onnxruntime as o
print(sorted(glob.glob(os.path.join(os.path.dirname(o.__file__), "capi", "libonnxruntime.so.*")))[-1])')"
  export ORT_DYLIB_PATH
fi
export PROGNOS_VENV="$venv"
export PROGNOS_BIN="$target_dir/debug/prognos"

cargo build --workspace --all-targets
cargo test --workspace -- --test-threads 2
"$venv/bin/python" -m pytest tests/python -q -p no:cacheprovider
