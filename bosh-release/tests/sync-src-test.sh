#!/usr/bin/env bash
# tests/sync-src-test.sh: checks that scripts/sync-src produces the layout the bakery
# package's spec and packaging script expect, in a temporary directory.
#
# Default (no network): --dry-run, and a copy with --no-vendor.
# BAKERY_TEST_VENDOR=1: also a full run with `cargo vendor` (needs crates.io) and an offline,
#   --locked `cargo metadata` against the vendored crates with an empty CARGO_HOME.
# BAKERY_TEST_PACKAGING=1 (implies the above): also runs packages/bakery/packaging as the
#   BOSH compilation VM would (release build: minutes) and asks the built bakery-cpi `info`.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
release_dir="$(dirname "$here")"
workspace="$(dirname "$release_dir")"
sync="$release_dir/scripts/sync-src"

passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok - $1"; }
not_ok() { failed=$((failed + 1)); echo "not ok - $1"; }
check() {
  local name="$1"
  shift
  local out
  if out="$("$@" 2>&1)"; then ok "$name"; else not_ok "$name: $(tail -c 1500 <<<"$out")"; fi
}

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

members() {
  awk '/^members[[:space:]]*=/ {inside = 1}
       inside { while (match($0, /"[^"]+"/)) { print substr($0, RSTART + 1, RLENGTH - 2); $0 = substr($0, RSTART + RLENGTH) } }
       inside && /\]/ {exit}' "$workspace/Cargo.toml"
}

dry_run_lists_workspace() {
  local out
  out="$("$sync" --dry-run --dest "$tmp/dry")"
  grep -qx '  Cargo.toml' <<<"$out" || { echo "dry run does not list Cargo.toml"; return 1; }
  grep -qx '  Cargo.lock' <<<"$out" || { echo "dry run does not list Cargo.lock"; return 1; }
  local member
  for member in $(members); do
    grep -qx "  $member/Cargo.toml" <<<"$out" || { echo "dry run does not list $member/Cargo.toml"; return 1; }
  done
  if grep -q '/target/\|^  target/' <<<"$out"; then echo "dry run lists build output"; return 1; fi
  grep -q 'cargo vendor --locked' <<<"$out" || { echo "dry run does not say it vendors"; return 1; }
  [[ ! -e "$tmp/dry" ]] || { echo "dry run created $tmp/dry"; return 1; }
}
check "sync-src --dry-run lists the workspace and changes nothing" dry_run_lists_workspace

copy_has_package_layout() {
  "$sync" --no-vendor --dest "$tmp/src" >/dev/null
  local src="$tmp/src/bakery"
  cmp -s "$workspace/Cargo.toml" "$src/Cargo.toml" || { echo "Cargo.toml differs from the workspace's"; return 1; }
  cmp -s "$workspace/Cargo.lock" "$src/Cargo.lock" || { echo "Cargo.lock differs from the workspace's"; return 1; }
  local member
  for member in $(members); do
    [[ -f "$src/$member/Cargo.toml" && -d "$src/$member/src" ]] || { echo "member $member is missing"; return 1; }
  done
  [[ ! -e "$src/target" && ! -e "$src/bosh-release" ]] || { echo "build output or the release itself was copied"; return 1; }
  grep -qx 'replace-with = "vendored-sources"' "$src/.cargo/config.toml" || { echo "no source replacement"; return 1; }
  grep -qx 'directory = "../vendor"' "$src/.cargo/config.toml" || { echo "vendor directory is not ../vendor"; return 1; }
  local perms
  perms="$(stat -c %a "$src")"
  [[ "$perms" == 755 ]] || { echo "src/bakery has mode $perms, want 755"; return 1; }
}
check "sync-src --no-vendor copies the workspace with the cargo source replacement" copy_has_package_layout

# Every `files` glob of packages/bakery/spec must match; vendor globs only once vendored.
spec_globs_match() {
  local with_vendor="$1"
  ruby -ryaml -e '
    src, with_vendor = ARGV
    spec = YAML.safe_load(File.read(File.join(ARGV[2], "packages/bakery/spec")))
    missing = spec.fetch("files").select do |glob|
      next false if glob.start_with?("vendor/") && with_vendor != "1"
      Dir.glob(glob, File::FNM_DOTMATCH, base: src).none? { |f| File.file?(File.join(src, f)) }
    end
    abort("package spec globs match nothing: #{missing.join(", ")}") unless missing.empty?
  ' "$tmp/src" "$with_vendor" "$release_dir"
}
check "packages/bakery/spec file globs match the synced sources" spec_globs_match 0

rerun_replaces_cleanly() {
  echo stale >"$tmp/src/bakery/stale-file"
  "$sync" --no-vendor --dest "$tmp/src" >/dev/null
  [[ ! -e "$tmp/src/bakery/stale-file" ]] || { echo "a second run kept a stale file"; return 1; }
  if compgen -G "$tmp/src/.bakery.*" >/dev/null; then echo "staging directories were left behind"; return 1; fi
}
check "a second sync-src run replaces src/bakery and leaves no staging directory" rerun_replaces_cleanly

rejects_non_workspace() {
  mkdir -p "$tmp/empty"
  local out
  if out="$("$sync" --no-vendor --workspace "$tmp/empty" --dest "$tmp/src2" 2>&1)"; then
    echo "sync-src accepted a directory without Cargo.toml"; return 1
  fi
  grep -q 'not the bakery workspace' <<<"$out" || { echo "unclear error: $out"; return 1; }
}
check "sync-src refuses a directory that is not the workspace, saying why" rejects_non_workspace

if [[ "${BAKERY_TEST_VENDOR:-}" == 1 || "${BAKERY_TEST_PACKAGING:-}" == 1 ]]; then
  vendored_build_resolves_offline() {
    "$sync" --dest "$tmp/src" >/dev/null
    compgen -G "$tmp/src/vendor/*/.cargo-checksum.json" >/dev/null || { echo "no vendored crate with .cargo-checksum.json"; return 1; }
    (cd "$tmp/src/bakery" && CARGO_HOME="$tmp/empty-cargo-home" cargo metadata --offline --locked --format-version 1 >/dev/null)
  }
  check "sync-src vendors the crates; cargo resolves offline and --locked from them alone" vendored_build_resolves_offline
  check "packages/bakery/spec file globs match the vendored sources too" spec_globs_match 1
fi

if [[ "${BAKERY_TEST_PACKAGING:-}" == 1 ]]; then
  packaging_builds_binaries() {
    # A compilation VM: the package's files in BOSH_COMPILE_TARGET, the rust-1-linux package
    # (here: this machine's toolchain) in BOSH_PACKAGES_DIR.
    local compile="$tmp/compile" install="$tmp/install" packages="$tmp/packages"
    mkdir -p "$compile" "$install" "$packages/rust-1-linux/bosh"
    cp -a "$tmp/src/bakery" "$tmp/src/vendor" "$compile/"
    printf 'export PATH="%s:$PATH"\n' "$(dirname "$(command -v cargo)")" >"$packages/rust-1-linux/bosh/compile.env"
    (cd "$compile" && BOSH_COMPILE_TARGET="$compile" BOSH_INSTALL_TARGET="$install" BOSH_PACKAGES_DIR="$packages" \
      bash "$release_dir/packages/bakery/packaging")
    [[ -x "$install/bin/bakery-server" && -x "$install/bin/bakery-cpi" ]] || { echo "binaries not installed"; return 1; }
    printf '{}' >"$tmp/cpi.json"
    "$install/bin/bakery-cpi" --config "$tmp/cpi.json" \
      <<<'{"method":"info","arguments":[],"context":{"director_uuid":"d","request_id":"r"}}' | grep -q '"api_version":2'
  }
  check "packages/bakery/packaging builds bakery-server and bakery-cpi offline" packaging_builds_binaries
fi

echo "sync-src-test: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
