#!/usr/bin/env bash
# ci/tasks/test.sh: Concourse task script: the repository's own test command, with cargo's
# download cache kept in the task cache.
set -euo pipefail

export CARGO_HOME="${PWD}/cargo-home"
mkdir -p "$CARGO_HOME"
# The image's toolchain lives in the default CARGO_HOME; keep its binaries on PATH.
export PATH="/usr/local/cargo/bin:${PATH}"
rustup component add rustfmt clippy >/dev/null 2>&1 || true

# Under CI a test whose tool or privilege is missing fails instead of skipping.
export CI=true

cd bakery
exec bash ci/test
