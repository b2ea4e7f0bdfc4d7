#!/usr/bin/env bash
# tests/check-rendered.sh: feeds the templates validate.rb rendered to the real binaries:
# every rendered cpi.json to `bakery-cpi --config` with an `info` request (the response must
# be a result with api_version 2), every rendered bakery.toml to `bakery-server check-config`.
# The /var/vcap paths in the rendered files are moved under a temporary root first, so the
# checks need no BOSH VM. A missing binary is a SKIP (exit 0), not a failure.
#
# usage: tests/check-rendered.sh <rendered-dir>   (the --out DIR of tests/validate.rb)
# Binaries are looked up in $BAKERY_BIN_DIR, then the workspace's target/debug and
# target/release, then PATH.
set -euo pipefail

rendered="${1:?usage: $0 <rendered-dir> (the --out DIR of tests/validate.rb)}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
workspace="$(cd "$here/../.." && pwd)"

find_binary() {
  local name="$1" dir
  for dir in "${BAKERY_BIN_DIR:-}" "$workspace/target/debug" "$workspace/target/release"; do
    if [[ -n "$dir" && -x "$dir/$name" ]]; then
      printf '%s\n' "$dir/$name"
      return 0
    fi
  done
  command -v "$name" || true
}

passed=0
failed=0
skipped=0
ok() { passed=$((passed + 1)); echo "ok - $1"; }
not_ok() { failed=$((failed + 1)); echo "not ok - $1"; }
skip() { skipped=$((skipped + 1)); echo "SKIP - $1"; }

root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT

# Copies a rendered file with every /var/vcap/ (and /etc/exports.d/) moved under $root.
relocate() {
  sed -e "s#/var/vcap/#$root/var/vcap/#g" -e "s#/etc/exports.d/#$root/etc/exports.d/#g" "$1" >"$2"
}

cpi="$(find_binary bakery-cpi)"
server="$(find_binary bakery-server)"

mapfile -t cpi_configs < <(find "$rendered" -path '*/jobs/bakery_cpi/config/cpi.json' | sort)
mapfile -t server_configs < <(find "$rendered" -path '*/jobs/bakery/config/bakery.toml' | sort)
if [[ ${#cpi_configs[@]} -eq 0 && ${#server_configs[@]} -eq 0 ]]; then
  echo "check-rendered: no rendered cpi.json or bakery.toml under $rendered" >&2
  exit 1
fi

request='{"method":"info","arguments":[],"context":{"director_uuid":"check-rendered","request_id":"check-rendered-1"},"api_version":2}'
for config in "${cpi_configs[@]}"; do
  case_name="${config#"$rendered"/}"
  case_name="${case_name%%/*}"
  if [[ -z "$cpi" ]]; then
    skip "$case_name: bakery-cpi accepts cpi.json (no bakery-cpi binary built)"
    continue
  fi
  response="$("$cpi" --config "$config" <<<"$request" 2>"$root/cpi.stderr" || true)"
  if ruby -rjson -e '
      r = JSON.parse(ARGV[0])
      exit(r["error"].nil? && r.dig("result", "api_version") == 2 ? 0 : 1)
    ' "$response" 2>/dev/null; then
    ok "$case_name: bakery-cpi --config cpi.json answers info with api_version 2"
  else
    not_ok "$case_name: bakery-cpi --config cpi.json answered info with: ${response:-<nothing>} (stderr: $(head -c 500 "$root/cpi.stderr"))"
  fi
done

# A check-config that accepts anything proves nothing: it must reject a broken file.
if [[ -n "$server" && ${#server_configs[@]} -gt 0 ]]; then
  printf 'listen = \n[[[ not toml\n' >"$root/broken.toml"
  if "$server" check-config --config "$root/broken.toml" >/dev/null 2>&1; then
    not_ok "bakery-server check-config rejects a broken config (it accepted $root/broken.toml)"
  else
    ok "bakery-server check-config rejects a broken config"
  fi
fi

for config in "${server_configs[@]}"; do
  case_name="${config#"$rendered"/}"
  case_name="${case_name%%/*}"
  if [[ -z "$server" ]]; then
    skip "$case_name: bakery-server check-config accepts bakery.toml (no bakery-server binary built)"
    continue
  fi
  # The job's files and the data dir under the temporary root, as on a BOSH VM.
  case_root="$root/$case_name"
  mkdir -p "$case_root"
  job_dir="$(dirname "$(dirname "$config")")"
  mkdir -p "$root/var/vcap/jobs/bakery/config" "$root/var/vcap/store/bakery" "$root/var/vcap/data" "$root/etc/exports.d"
  for file in "$job_dir"/config/*; do
    relocate "$file" "$root/var/vcap/jobs/bakery/config/$(basename "$file")"
  done
  relocated="$root/var/vcap/jobs/bakery/config/bakery.toml"
  grep -Eo "\"$root/var/vcap/(store|data)/[^\"]*\"" "$relocated" | tr -d '"' | while IFS= read -r dir; do
    case "$dir" in
      */config/*) ;;
      *) mkdir -p "$dir" ;;
    esac
  done
  # The PPI executable lives in another release: a stand-in that answers like one.
  ppi="$(sed -n 's/^ppi = "\(.*\)"$/\1/p' "$relocated")"
  if [[ -n "$ppi" ]]; then
    mkdir -p "$(dirname "$ppi")"
    printf '#!/bin/sh\ncat >/dev/null\nprintf ok\n' >"$ppi"
    chmod +x "$ppi"
  fi
  # Example TLS material is not a real key pair: make one when the config asks for TLS.
  if grep -q '^tls_cert = ' "$relocated"; then
    if command -v openssl >/dev/null 2>&1; then
      openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=bakery-check \
        -keyout "$root/var/vcap/jobs/bakery/config/tls.key" \
        -out "$root/var/vcap/jobs/bakery/config/tls.crt" >/dev/null 2>&1
    else
      skip "$case_name: bakery-server check-config with TLS (no openssl to make a key pair)"
      continue
    fi
  fi
  if out="$("$server" check-config --config "$relocated" 2>&1)"; then
    ok "$case_name: bakery-server check-config accepts bakery.toml"
  else
    not_ok "$case_name: bakery-server check-config rejects bakery.toml: $(head -c 800 <<<"$out")"
  fi
done

echo "check-rendered: $passed passed, $failed failed, $skipped skipped"
[[ $failed -eq 0 ]]
