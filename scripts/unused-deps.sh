#!/usr/bin/env bash
# Fails when a crate of the workspace declares a dependency its code never names
# (cargo-machete; installed from crates.io on first use). Deliberate exceptions are listed in
# the crate's `[package.metadata.cargo-machete] ignored`.
set -euo pipefail
cd "$(dirname "$0")/.."
version=0.9.2
if ! cargo machete --version 2>/dev/null | grep -q "$version"; then
  cargo install --quiet --locked cargo-machete --version "$version"
fi
cargo machete
