#!/usr/bin/env bash
# tests/run.sh: entry point of the BOSH release checks (called by ci/test).
# Runs validate.rb (specs, templates rendered with example-properties.yml, manifests,
# pipeline), ctl-test.sh (the rendered bin/ctl starting and stopping a stand-in server) and
# sync-src-test.sh (the layout packaging expects), then, when
# BAKERY_CHECK_RENDERED=1, check-rendered.sh (the rendered configs against the real
# binaries). Prints `N passed, M failed` over all of them; exits non-zero on any failure.
#
# BAKERY_RENDER_DIR=<dir>   keep the rendered templates there (default: a temp dir, removed)
# BAKERY_TEST_VENDOR=1, BAKERY_TEST_PACKAGING=1: see sync-src-test.sh (network / slow).
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

if [[ -n "${BAKERY_RENDER_DIR:-}" ]]; then
  render_dir="$BAKERY_RENDER_DIR"
  mkdir -p "$render_dir"
else
  render_dir="$(mktemp -d)"
  trap 'rm -rf "$render_dir"' EXIT
fi

total_passed=0
total_failed=0
total_skipped=0

# Runs one suite, echoing its output, and adds its closing `N passed, M failed` to the totals.
run_suite() {
  local name="$1" out status summary
  shift
  out="$("$@" 2>&1)"
  status=$?
  printf '%s\n' "$out"
  summary="$(grep -Eo '[0-9]+ passed, [0-9]+ failed' <<<"$out" | tail -n 1)"
  if [[ -z "$summary" ]]; then
    echo "not ok - $name did not finish (exit $status)"
    total_failed=$((total_failed + 1))
    return
  fi
  local p f s
  p="${summary%% passed*}"
  f="${summary#*passed, }"
  f="${f%% failed*}"
  s="$(grep -Eo '[0-9]+ passed, [0-9]+ failed, [0-9]+ skipped' <<<"$out" | tail -n 1 | sed -E 's/.*, ([0-9]+) skipped/\1/')"
  total_passed=$((total_passed + p))
  total_failed=$((total_failed + f))
  total_skipped=$((total_skipped + ${s:-0}))
  if [[ $status -ne 0 && $f -eq 0 ]]; then
    echo "not ok - $name exited $status"
    total_failed=$((total_failed + 1))
  fi
}

run_suite validate.rb ruby "$here/validate.rb" --out "$render_dir"
run_suite ctl-test.sh bash "$here/ctl-test.sh" "$render_dir"
run_suite sync-src-test.sh bash "$here/sync-src-test.sh"
if [[ "${BAKERY_CHECK_RENDERED:-}" == 1 ]]; then
  run_suite check-rendered.sh bash "$here/check-rendered.sh" "$render_dir"
fi

echo "bosh-release: $total_passed passed, $total_failed failed, $total_skipped skipped"
[[ $total_failed -eq 0 ]]
