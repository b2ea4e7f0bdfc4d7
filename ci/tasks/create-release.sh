#!/usr/bin/env bash
# ci/tasks/create-release.sh: Concourse task script: puts the synced sources into the
# release's src/, vendors rust-1-linux (bosh vendor-package, into the release's local final
# blobstore) and writes release-tarball/bakery-<version>.tgz.
set -euo pipefail

build_dir="$PWD"
release_dir="$build_dir/bakery/bosh-release"

rm -rf "$release_dir/src/bakery" "$release_dir/src/vendor"
cp -a "$build_dir/synced-src/bakery" "$build_dir/synced-src/vendor" "$release_dir/src/"

bosh vendor-package rust-1-linux "$build_dir/rust-release" --dir "$release_dir"

version="0+dev.$(date -u +%Y%m%d%H%M%S)"
bosh create-release --dir "$release_dir" --force --version "$version" \
  --tarball "$build_dir/release-tarball/bakery-$version.tgz"
