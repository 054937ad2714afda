#!/usr/bin/env bash
# Longer fuzz runs than CI's fixed budget: random SQL, malformed pgwire messages and hostile
# Flight SQL input against the real server, over several seeds, then (with a nightly toolchain
# and cargo-fuzz) the libFuzzer targets for the parser and the artifact loader.
#
#   scripts/fuzz.sh [seeds (default 20)] [libFuzzer seconds per target (default 300, 0 = skip)]
#
# Uses the same target dir and virtual environment as scripts/test.sh. A failure names the seed
# (PROGNOS_FUZZ_SEED) that reproduces it; libFuzzer crashes land in tests/fuzz/artifacts/ —
# add the input to tests/fuzz/corpus/<target>/ once fixed so CI replays it.
set -euo pipefail
cd "$(dirname "$0")/.."
seeds="${1:-20}"
fuzz_seconds="${2:-300}"
venv="${PROGNOS_VENV:-$PWD/.venv}"
export PROGNOS_FUZZ_STATEMENTS="${PROGNOS_FUZZ_STATEMENTS:-20000}"
export PROGNOS_FUZZ_CONNECTIONS="${PROGNOS_FUZZ_CONNECTIONS:-2000}"
export PROGNOS_FUZZ_ITERATIONS="${PROGNOS_FUZZ_ITERATIONS:-20000}"
cargo build -p prognos
for seed in $(seq 1 "$seeds"); do
  echo "== seed $seed"
  PROGNOS_FUZZ_SEED=$seed cargo test -q -p prognos-e2e --test fuzz_sql --test fuzz_wire -- --nocapture
  (cd tests/python && PROGNOS_FUZZ_SEED=$seed "$venv/bin/python" -m pytest -q test_fuzz_flight.py)
done
if [ "$fuzz_seconds" -gt 0 ]; then
  if cargo +nightly fuzz --version >/dev/null 2>&1; then
    for target in sql_front_door artifact_loader; do
      (cd tests/fuzz && cargo +nightly fuzz run "$target" corpus/"$target" -- -max_total_time="$fuzz_seconds")
    done
  else
    echo "cargo-fuzz or a nightly toolchain is missing: skipping the libFuzzer targets" >&2
  fi
fi
