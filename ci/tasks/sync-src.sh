#!/usr/bin/env bash
# ci/tasks/sync-src.sh: Concourse task script: runs scripts/sync-src into the synced-src output
# (src/bakery with the workspace and its cargo config, src/vendor with the vendored crates).
set -euo pipefail

export CARGO_HOME="${PWD}/cargo-home"
mkdir -p "$CARGO_HOME"
export PATH="/usr/local/cargo/bin:${PATH}"

bakery/bosh-release/scripts/sync-src --workspace bakery --dest "${PWD}/synced-src"
