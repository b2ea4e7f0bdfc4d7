#!/usr/bin/env bash
# tests/check-rendered.sh: feeds the templates validate.rb rendered to the real binaries:
# - every rendered cpi.json to `bakery-cpi --config` with an `info` request (the response must
#   be a result with api_version 2);
# - every rendered bakery.toml to `bakery-server check-config` (after a control: a broken file
#   must be rejected), with real TLS material where the case asks for TLS, and the resolved
#   settings compared with what the case's properties ask for (backend, TFTP, caps, ...);
# - every rendered dnsmasq.conf against `bakery-server print-dnsmasq-config` for the same
#   subnet and TFTP server: the proxy-DHCP lines must be the same, in the same order;
# - the rendered ganesha pre-start: it refuses a ganesha.conf without bakery's %include
#   (naming the line to add) and passes, through the real check-config, with it.
# The /var/vcap (and /etc/exports.d, /etc/ganesha) paths in the rendered files are moved under
# a temporary root first, so the checks need no BOSH VM.
#
# Then, live, on loopback ports:
# - bakery-defaults: the real bakery-server, and the real bakery-cpi with the rendered
#   bakery-cpi-director-wide cpi.json (no url: it comes in the request context, as a director
#   CPI config passes it) creating, finding and deleting a disk;
# - bakery-full (token + TLS): HTTPS with the rendered token file (admin, extra and read-only
#   tokens), the boot path closed, the status page open, and the real bakery-cpi with the
#   rendered bakery-cpi-explicit cpi.json (same token, `ca_cert` set to the test CA)
#   creating, finding and deleting a disk; without `ca_cert` it must fail; the rendered
#   post-start passes while the server answers and fails once it is stopped;
# - bakery-hooktftp: the boot path open without a token while the API needs one.
#
# A missing binary is a SKIP, except when CI is set: then it is a failure.
#
# usage: tests/check-rendered.sh <rendered-dir>   (the --out DIR of tests/validate.rb)
# Binaries are looked up in $BAKERY_BIN_DIR, then the workspace's target dir
# ($CARGO_TARGET_DIR or <repo>/target) debug and release, then PATH.
set -euo pipefail

rendered="${1:?usage: $0 <rendered-dir> (the --out DIR of tests/validate.rb)}"
rendered="$(cd "$rendered" && pwd)"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
workspace="$(cd "$here/../.." && pwd)"
target_dir="${CARGO_TARGET_DIR:-$workspace/target}"
[[ "$target_dir" == /* ]] || target_dir="$workspace/$target_dir"

find_binary() {
  local name="$1" dir
  for dir in "${BAKERY_BIN_DIR:-}" "$target_dir/debug" "$target_dir/release"; do
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
# A check that cannot run because a binary is missing: a failure under CI, else a skip.
missing() {
  if [[ -n "${CI:-}" ]]; then
    not_ok "$1 (CI is set: build the binaries first, cargo build --workspace --bins)"
  else
    skip "$1"
  fi
}

root="$(mktemp -d)"
server_pid=""
stop_server() {
  if [[ -n "$server_pid" ]]; then
    kill -TERM "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
  fi
}
cleanup() {
  stop_server
  rm -rf "$root"
}
trap cleanup EXIT

# Copies a rendered file with every /var/vcap/, /etc/exports.d/ and /etc/ganesha/ moved under $root.
relocate() {
  sed -e "s#/var/vcap/#$root/var/vcap/#g" -e "s#/etc/exports.d/#$root/etc/exports.d/#g" \
    -e "s#/etc/ganesha/#$root/etc/ganesha/#g" "$1" >"$2"
}

# The case name of a rendered file: the first path component under $rendered.
case_of() {
  local name="${1#"$rendered"/}"
  printf '%s\n' "${name%%/*}"
}

# Sets (replacing any previous line) `key = value` in a TOML file of key = value lines.
toml_set() {
  local file="$1" key="$2" value="$3"
  sed -i "/^$key = /d" "$file"
  printf '%s = %s\n' "$key" "$value" >>"$file"
}

cpi="$(find_binary bakery-cpi)"
server="$(find_binary bakery-server)"
echo "# bakery-server: ${server:-<none>}; bakery-cpi: ${cpi:-<none>}"

mapfile -t cpi_configs < <(find "$rendered" -path '*/jobs/bakery_cpi/config/cpi.json' | sort)
mapfile -t server_configs < <(find "$rendered" -path '*/jobs/bakery/config/bakery.toml' | sort)
mapfile -t dnsmasq_configs < <(find "$rendered" -path '*/jobs/bakery/config/dnsmasq.conf' | sort)
if [[ ${#cpi_configs[@]} -eq 0 && ${#server_configs[@]} -eq 0 ]]; then
  echo "check-rendered: no rendered cpi.json or bakery.toml under $rendered" >&2
  exit 1
fi

# TLS material the HTTPS checks use (the example properties hold no real key pair).
tls="$root/tls"
if ! ruby "$here/make-tls.rb" "$tls" 2>"$root/make-tls.stderr"; then
  not_ok "make-tls.rb makes a CA and a server certificate: $(head -c 400 "$root/make-tls.stderr")"
fi

# --- bakery-cpi --config cpi.json ------------------------------------------------------------

request='{"method":"info","arguments":[],"context":{"director_uuid":"check-rendered","request_id":"check-rendered-1"},"api_version":2}'
for config in "${cpi_configs[@]}"; do
  case_name="$(case_of "$config")"
  if [[ -z "$cpi" ]]; then
    missing "$case_name: bakery-cpi accepts cpi.json (no bakery-cpi binary built)"
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

# --- bakery-server check-config --------------------------------------------------------------

# A check-config that accepts anything proves nothing: it must reject a broken file.
if [[ -n "$server" && ${#server_configs[@]} -gt 0 ]]; then
  printf 'listen = \n[[[ not toml\n' >"$root/broken.toml"
  if "$server" check-config --config "$root/broken.toml" >/dev/null 2>&1; then
    not_ok "bakery-server check-config rejects a broken config (it accepted $root/broken.toml)"
  else
    ok "bakery-server check-config rejects a broken config"
  fi
fi

# What check-config must resolve each case's bakery.toml to (lines of its `Config {...}`
# output): proof that bakery-server reads the rendered keys the way the properties mean them.
declare -A resolved=(
  [bakery-full]='nfs_backend: Kernel,|db_path: "ROOT/var/vcap/store/bakery/db/bakery.db",|boot_root_dir: Some(|boot_files_require_token: true,|max_pis: 200,|warm_pool: Some(|min_free_space: 2147483648,|pin_pi_addresses: false,|tftp_listen: Some(|token_file: Some(|tls: Some(|ppi_timeout: 30s,|power_cycle_pause: 2.5s,'
  [bakery-defaults]='nfs_backend: Kernel,|nfs_address: "192.168.50.4",|exports_file: "ROOT/etc/exports.d/bakery.exports",|token_file: None,|tls: None,|max_pis: 1024,'
  [bakery-ganesha]='nfs_backend: Ganesha,|exports_file: "ROOT/etc/ganesha/bakery.conf",|exportfs_cmd: "",|ganesha_pid_file: Some(|"ROOT/var/vcap/sys/run/nfs-ganesha/ganesha.pid",|ganesha_export_id_base: 2000,'
  [bakery-ganesha-bpm]='nfs_backend: Ganesha,|exports_file: "ROOT/var/vcap/data/ganesha/bakery.conf",|exportfs_cmd: "ROOT/var/vcap/jobs/nfs-ganesha/bin/reload",|ganesha_pid_file: None,'
  [bakery-hooktftp]='tftp_listen: None,|pin_pi_addresses: true,|max_pis: 64,|token_file: Some(|boot_files_require_token: false,'
)

# Puts a case's rendered job files under $root/var/vcap/jobs/bakery (relocated), with the
# directories its config names, a stand-in PPI and, for TLS, the test key pair.
install_case() {
  local config="$1" job_dir file dir ppi
  job_dir="$(dirname "$(dirname "$config")")"
  rm -rf "$root/var/vcap/jobs/bakery"
  mkdir -p "$root/var/vcap/jobs/bakery/config" "$root/var/vcap/jobs/bakery/bin" "$root/var/vcap/store/bakery" \
    "$root/var/vcap/data" "$root/etc/exports.d" "$root/etc/ganesha"
  for file in "$job_dir"/config/* "$job_dir"/bin/*; do
    relocate "$file" "$root/var/vcap/jobs/bakery/${file#"$job_dir"/}"
  done
  chmod +x "$root/var/vcap/jobs/bakery/bin/"*
  relocated="$root/var/vcap/jobs/bakery/config/bakery.toml"
  grep -Eo "\"$root/var/vcap/(store|data)/[^\"]*\"" "$relocated" | tr -d '"' | while IFS= read -r dir; do
    case "$dir" in
      */config/*) ;;
      *.conf | *.db) mkdir -p "$(dirname "$dir")" ;;
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
  if grep -q '^tls_cert = ' "$relocated"; then
    cp "$tls/tls.crt" "$root/var/vcap/jobs/bakery/config/tls.crt"
    cp "$tls/tls.key" "$root/var/vcap/jobs/bakery/config/tls.key"
  fi
}

for config in "${server_configs[@]}"; do
  case_name="$(case_of "$config")"
  if [[ -z "$server" ]]; then
    missing "$case_name: bakery-server check-config accepts bakery.toml (no bakery-server binary built)"
    continue
  fi
  install_case "$config"
  if ! out="$("$server" check-config --config "$relocated" 2>&1)"; then
    not_ok "$case_name: bakery-server check-config rejects bakery.toml: $(head -c 800 <<<"$out")"
    continue
  fi
  ok "$case_name: bakery-server check-config accepts bakery.toml"
  if [[ -n "${resolved[$case_name]:-}" ]]; then
    wrong=()
    IFS='|' read -r -a wants <<<"${resolved[$case_name]}"
    for want in "${wants[@]}"; do
      want="${want//ROOT/$root}"
      grep -qF -- "$want" <<<"$out" || wrong+=("$want")
    done
    if [[ ${#wrong[@]} -eq 0 ]]; then
      ok "$case_name: bakery-server resolves the rendered settings as the properties mean them (${#wants[@]} settings)"
    else
      not_ok "$case_name: check-config output lacks ${wrong[*]}: $(head -c 1500 <<<"$out")"
    fi
  fi
done

# Every setting bakery-server has (its long flags, which are its TOML keys with `_`) must be
# rendered by some case, so a setting added to the server and not to the job shows up here.
# `config` is the file itself.
if [[ -z "$server" ]]; then
  missing "every bakery-server setting is rendered by some case (no bakery-server binary built)"
elif [[ ${#server_configs[@]} -gt 0 ]]; then
  mapfile -t settings < <("$server" --help | grep -Eo '^[[:space:]]+--[a-z][a-z0-9-]+' | sed -e 's/^[[:space:]]*--//' -e 's/-/_/g' \
    | grep -vx -e config -e help -e version)
  unrendered=()
  for key in "${settings[@]}"; do
    grep -qh "^$key = " "${server_configs[@]}" || unrendered+=("$key")
  done
  if [[ ${#settings[@]} -gt 10 && ${#unrendered[@]} -eq 0 ]]; then
    ok "every bakery-server setting (${#settings[@]} in its --help) is rendered by some case of example-properties.yml"
  else
    not_ok "bakery-server settings no case renders (a job property missing?): ${unrendered[*]:-<none>} (of ${#settings[@]} settings)"
  fi
fi

# --- dnsmasq.conf = print-dnsmasq-config ------------------------------------------------------

for config in "${dnsmasq_configs[@]}"; do
  grep -q '^dhcp-range=' "$config" || continue
  case_name="$(case_of "$config")"
  if [[ -z "$server" ]]; then
    missing "$case_name: dnsmasq.conf has print-dnsmasq-config's lines (no bakery-server binary built)"
    continue
  fi
  # The same inputs: dnsmasq.subnet, and dnsmasq.tftp_server or else the instance IP.
  read -r subnet tftp_server log_dhcp < <(ruby -rjson -e '
      c = JSON.parse(File.read(ARGV[0]))
      d = c.dig("properties", "dnsmasq") || {}
      puts [d["subnet"], d["tftp_server"] || c.dig("spec", "ip"), d.fetch("log_dhcp", true)].join(" ")
    ' "$rendered/$case_name/case.json")
  if ! printed="$("$server" print-dnsmasq-config --subnet "$subnet" --tftp-server "$tftp_server" 2>&1)"; then
    not_ok "$case_name: bakery-server print-dnsmasq-config --subnet $subnet --tftp-server $tftp_server failed: $printed"
    continue
  fi
  want="$(grep -v '^#' <<<"$printed" | grep -v '^$')"
  # The job leaves log-dhcp out when dnsmasq.log_dhcp is false, and only then.
  [[ "$log_dhcp" == true ]] || want="$(grep -vx 'log-dhcp' <<<"$want")"
  got="$(sed -n '/^# bakery job:/q;p' "$config" | grep -v '^#' | grep -v '^$')"
  if [[ -n "$want" && "$got" == "$want" ]]; then
    ok "$case_name: dnsmasq.conf has exactly print-dnsmasq-config's proxy-DHCP lines (--subnet $subnet --tftp-server $tftp_server)"
  else
    not_ok "$case_name: dnsmasq.conf lines differ from print-dnsmasq-config's: got [$got] want [$want]"
  fi
done

# --- the ganesha pre-start --------------------------------------------------------------------

ganesha_config="$rendered/bakery-ganesha/jobs/bakery/config/bakery.toml"
if [[ -z "$server" ]]; then
  missing "bakery-ganesha: pre-start checks ganesha.conf's %include (no bakery-server binary built)"
elif [[ ! -f "$ganesha_config" ]]; then
  not_ok "bakery-ganesha: the case was not rendered"
else
  install_case "$ganesha_config"
  pre_start="$root/var/vcap/jobs/bakery/bin/pre-start"
  # Nothing the relocated script runs may reach outside $root (comments aside).
  outside="$(grep -v '^[[:space:]]*#' "$pre_start" | grep -E "(^|[ =\"])/(etc|var)/" || true)"
  if [[ -n "$outside" ]]; then
    not_ok "bakery-ganesha: relocated pre-start still names system paths: $(head -n 3 <<<"$outside")"
  else
    mkdir -p "$root/var/vcap/packages/bakery/bin"
    ln -sf "$server" "$root/var/vcap/packages/bakery/bin/bakery-server"
    printf 'NFS_CORE_PARAM { Protocols = 3, 4; }\n' >"$root/etc/ganesha/ganesha.conf"
    if out="$(bash "$pre_start" 2>&1)"; then
      not_ok "bakery-ganesha: pre-start passed though ganesha.conf does not include bakery's exports"
    elif grep -qF "add the line  %include \"$root/etc/ganesha/bakery.conf\"" <<<"$out"; then
      ok "bakery-ganesha: pre-start refuses a ganesha.conf without the %include and names the line to add"
    else
      not_ok "bakery-ganesha: pre-start failed without naming the %include line: $(head -c 600 <<<"$out")"
    fi
    printf '  %%include "%s"  \n' "$root/etc/ganesha/bakery.conf" >>"$root/etc/ganesha/ganesha.conf"
    if out="$(bash "$pre_start" 2>&1)" && [[ -f "$root/etc/ganesha/bakery.conf" ]] && grep -q 'nfs_backend: Ganesha' <<<"$out" \
      && grep -qF "no nfs-ganesha pid file $root/var/vcap/sys/run/nfs-ganesha/ganesha.pid yet" <<<"$out"; then
      ok "bakery-ganesha: with the %include, pre-start creates the exports file, warns that ganesha is not running yet, and the real check-config passes"
    else
      not_ok "bakery-ganesha: pre-start with the %include: $(head -c 800 <<<"$out")"
    fi
  fi
fi

# --- live -------------------------------------------------------------------------------------

# Starts the real bakery-server from a rendered config (relocated) on a loopback port with
# its own data dir, TFTP on a free loopback port (or off, as rendered) and no exportfs.
# Sets $port, $live and $server_pid; returns non-zero (with the log) when it does not come up.
start_live() {
  local config="$1" scheme="$2" tftp
  live="$root/live-$(case_of "$config")"
  mkdir -p "$live/data"
  install_case "$config"
  port="$(ruby -rsocket -e 's = TCPServer.new("127.0.0.1", 0); puts s.addr[1]; s.close')"
  cp "$relocated" "$live/bakery.toml"
  toml_set "$live/bakery.toml" listen "\"127.0.0.1:$port\""
  toml_set "$live/bakery.toml" data_dir "\"$live/data\""
  if grep -q '^db_path = ' "$live/bakery.toml"; then toml_set "$live/bakery.toml" db_path "\"$live/data/bakery.db\""; fi
  toml_set "$live/bakery.toml" exportfs_cmd '""'
  tftp="$(sed -n 's/^tftp_listen = "\(.*\)"$/\1/p' "$live/bakery.toml")"
  [[ "${tftp,,}" == off ]] || toml_set "$live/bakery.toml" tftp_listen '"127.0.0.1:0"'
  "$server" --config "$live/bakery.toml" >"$live/server.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 1 100); do
    # Any HTTP answer (401 included) means it is up.
    if curl -s -o /dev/null --cacert "$tls/ca.crt" "$scheme://127.0.0.1:$port/"; then return 0; fi
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
  done
  return 1
}

# The HTTP status of a request: status <curl args...>
status() { curl -s -o /dev/null -w '%{http_code}' --cacert "$tls/ca.crt" "$@" || true; }

cpi_call() {
  local config="$1" method="$2" arguments="$3" context="$4"
  "$cpi" --config "$config" 2>>"$live/cpi.stderr" <<<"{\"method\":\"$method\",\"arguments\":$arguments,\"context\":{\"director_uuid\":\"check-rendered\",\"request_id\":\"r-$method\"$context},\"api_version\":2}"
}
result_of() { ruby -rjson -e 'r = JSON.parse(ARGV[0]); abort("error: #{r["error"]}") if r["error"]; puts JSON.generate(r["result"])' "$1"; }

# create_disk, has_disk, has_vm, delete_disk, has_disk through one cpi.json; "" when all as expected.
disk_round_trip() {
  local config="$1" context="$2" disk has_disk has_vm deleted gone
  disk="$(result_of "$(cpi_call "$config" create_disk '[1024, {}, null]' "$context")" 2>&1 | tr -d '"')" || true
  has_disk="$(result_of "$(cpi_call "$config" has_disk "[\"$disk\"]" "$context")" 2>&1)" || true
  has_vm="$(result_of "$(cpi_call "$config" has_vm '["1a2b3c4d"]' "$context")" 2>&1)" || true
  deleted="$(result_of "$(cpi_call "$config" delete_disk "[\"$disk\"]" "$context")" 2>&1)" || true
  gone="$(result_of "$(cpi_call "$config" has_disk "[\"$disk\"]" "$context")" 2>&1)" || true
  if [[ -z "$disk" || "$disk" == error* || "$has_disk" != true || "$has_vm" != false || "$deleted" != null || "$gone" != false ]]; then
    echo "create_disk=$disk has_disk=$has_disk has_vm=$has_vm delete_disk=$deleted has_disk_after=$gone (cpi stderr: $(tail -c 600 "$live/cpi.stderr" 2>/dev/null))"
  fi
}

live_defaults="$rendered/bakery-defaults/jobs/bakery/config/bakery.toml"
live_full="$rendered/bakery-full/jobs/bakery/config/bakery.toml"
live_hooktftp="$rendered/bakery-hooktftp/jobs/bakery/config/bakery.toml"
cpi_director_wide="$rendered/bakery-cpi-director-wide/jobs/bakery_cpi/config/cpi.json"
cpi_explicit="$rendered/bakery-cpi-explicit/jobs/bakery_cpi/config/cpi.json"

if [[ -z "$server" || -z "$cpi" ]]; then
  missing "live: bakery-server and bakery-cpi through the rendered configs (binaries not built)"
elif [[ ! -f "$live_defaults" || ! -f "$live_full" || ! -f "$live_hooktftp" || ! -f "$cpi_director_wide" || ! -f "$cpi_explicit" ]]; then
  not_ok "live: the bakery-defaults, bakery-full, bakery-hooktftp and bakery-cpi-* cases were not all rendered"
else
  # bakery-defaults: plain HTTP, no token; the url comes in the request context.
  if ! start_live "$live_defaults" http; then
    not_ok "live bakery-defaults: bakery-server did not come up from the rendered config: $(tail -c 800 "$live/server.log")"
  else
    problem="$(disk_round_trip "$cpi_director_wide" ",\"url\":\"http://127.0.0.1:$port/api/v1\"")"
    if [[ -z "$problem" ]]; then
      ok "live bakery-defaults: bakery-cpi (url from the context) creates, finds and deletes a disk on bakery-server"
    else
      not_ok "live bakery-defaults: $problem"
    fi
  fi
  stop_server

  # bakery-full: HTTPS with the rendered token file; the rendered bakery-cpi-explicit cpi.json
  # carries the same token; its url and ca_cert values are swapped for this server and CA.
  if ! start_live "$live_full" https; then
    not_ok "live bakery-full: bakery-server did not come up (HTTPS) from the rendered config: $(tail -c 800 "$live/server.log")"
  else
    base="https://127.0.0.1:$port"
    admin='s3cr3t-token-"quoted"'
    extra='next-admin-token-0123456789'
    read_only='metrics-read-only-0123456789'
    got="untrusted=$(curl -s -o /dev/null -w '%{http_code}' "$base/api/v1/fridge" || true)"
    got+=" no-token=$(status "$base/api/v1/fridge")"
    got+=" admin=$(status -H "Authorization: Bearer $admin" "$base/api/v1/fridge")"
    got+=" extra=$(status -H "Authorization: Bearer $extra" "$base/api/v1/fridge")"
    got+=" ro-get=$(status -H "Authorization: Bearer $read_only" "$base/api/v1/fridge")"
    got+=" ro-post=$(status -X POST -H "Authorization: Bearer $read_only" -H 'Content-Type: application/json' -d '{"size":1}' "$base/api/v1/disks")"
    got+=" metrics=$(status "$base/metrics")"
    got+=" ro-metrics=$(status -H "Authorization: Bearer $read_only" "$base/metrics")"
    got+=" page=$(status "$base/")"
    got+=" boot-files=$(status "$base/api/v1/files/1a2b3c4d/start4.elf")"
    want="untrusted=000 no-token=401 admin=200 extra=200 ro-get=200 ro-post=403 metrics=401 ro-metrics=200 page=200 boot-files=401"
    if [[ "$got" == "$want" ]]; then
      ok "live bakery-full: HTTPS with the test CA only; rendered admin, extra and read-only tokens; status page open; boot path closed"
    else
      not_ok "live bakery-full: got $got, want $want"
    fi
    if ! ruby -rjson -e '
        c = JSON.parse(File.read(ARGV[0]))
        abort "rendered #{ARGV[0]} has no ca_cert or no url" unless c.key?("ca_cert") && c.key?("url")
        c["url"] = ARGV[1]
        c["ca_cert"] = File.read(ARGV[2])
        File.write(ARGV[3], JSON.generate(c))
        c.delete("ca_cert")
        File.write(ARGV[4], JSON.generate(c))
      ' "$cpi_explicit" "$base/api/v1" "$tls/ca.crt" "$live/cpi.json" "$live/cpi-no-ca.json" 2>"$live/swap.stderr"; then
      not_ok "live bakery-full: bakery-cpi over HTTPS: $(cat "$live/swap.stderr")"
    else
      problem="$(disk_round_trip "$live/cpi.json" "")"
      if [[ -z "$problem" ]]; then
        ok "live bakery-full: bakery-cpi with the rendered cpi.json (token, ca_cert) creates, finds and deletes a disk over HTTPS"
      else
        not_ok "live bakery-full: $problem"
      fi
      untrusted="$(cpi_call "$live/cpi-no-ca.json" create_disk '[1024, {}, null]' "")"
      if ruby -rjson -e 'exit(JSON.parse(ARGV[0])["error"] ? 0 : 1)' "$untrusted" 2>/dev/null; then
        ok "live bakery-full: without ca_cert bakery-cpi refuses bakery's certificate"
      else
        not_ok "live bakery-full: without ca_cert bakery-cpi answered $untrusted"
      fi
    fi
    # bin/post-start waits for the listener: passes now, fails (quickly here) once it is gone.
    sed -e "s#:8080/#:$port/#" -e 's/seq 1 60/seq 1 2/' "$root/var/vcap/jobs/bakery/bin/post-start" >"$live/post-start"
    if ! out="$(bash "$live/post-start" 2>&1)"; then
      not_ok "live bakery-full: post-start fails though bakery-server answers: $out"
    else
      stop_server
      if out="$(bash "$live/post-start" 2>&1)"; then
        not_ok "live bakery-full: post-start passes though bakery-server is stopped"
      elif grep -qF "does not answer at https://127.0.0.1:$port/" <<<"$out"; then
        ok "live bakery-full: post-start waits for bakery-server's HTTPS listener and fails when nothing answers"
      else
        not_ok "live bakery-full: post-start failed without saying why: $out"
      fi
    fi
  fi
  stop_server

  # bakery-hooktftp: TFTP off; the boot path HookTFTP forwards to is open, the API is not.
  if ! start_live "$live_hooktftp" http; then
    not_ok "live bakery-hooktftp: bakery-server did not come up from the rendered config: $(tail -c 800 "$live/server.log")"
  else
    base="http://127.0.0.1:$port"
    got="boot-files=$(status "$base/api/v1/files/1a2b3c4d/start4.elf") api=$(status "$base/api/v1/fridge")"
    got+=" admin=$(status -H 'Authorization: Bearer hooktftp-admin-token-0123456789' "$base/api/v1/fridge")"
    if [[ "$got" == "boot-files=404 api=401 admin=200" ]]; then
      ok "live bakery-hooktftp: the boot path answers without a token (404 for an unbaked Pi), the API needs one"
    else
      not_ok "live bakery-hooktftp: got $got, want boot-files=404 api=401 admin=200 ($(tail -c 400 "$live/server.log"))"
    fi
  fi
  stop_server
fi

echo "check-rendered: $passed passed, $failed failed, $skipped skipped"
[[ $failed -eq 0 ]]
