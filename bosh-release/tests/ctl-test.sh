#!/usr/bin/env bash
# tests/ctl-test.sh: runs the rendered bin/ctl of the bakery job as monit would, with its
# /var/vcap paths moved under a temp dir and a stand-in bakery-server: start writes the
# pidfile of the running process, a second start leaves it alone, stop ends it and removes
# the pidfile, and a start of the disabled dnsmasq fails.
#
# usage: tests/ctl-test.sh <rendered-dir>   (the --out DIR of tests/validate.rb)
set -euo pipefail

rendered="${1:?usage: $0 <rendered-dir>}"
passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok - $1"; }
not_ok() { failed=$((failed + 1)); echo "not ok - $1"; }

root="$(mktemp -d)"
cleanup() {
  if [[ -f "$root/var/vcap/sys/run/bakery/bakery.pid" ]]; then
    kill -KILL "$(cat "$root/var/vcap/sys/run/bakery/bakery.pid")" 2>/dev/null || true
  fi
  rm -rf "$root"
}
trap cleanup EXIT

ctl_source="$rendered/bakery-defaults/jobs/bakery/bin/ctl"
if [[ ! -f "$ctl_source" ]]; then
  echo "ctl-test: $ctl_source was not rendered" >&2
  exit 1
fi
mkdir -p "$root/var/vcap/jobs/bakery/bin" "$root/var/vcap/packages/bakery/bin"
ctl="$root/var/vcap/jobs/bakery/bin/ctl"
sed "s#/var/vcap/#$root/var/vcap/#g" "$ctl_source" >"$ctl"
chmod +x "$ctl"
# The stand-in records its arguments and environment, then runs until it is stopped.
cat >"$root/var/vcap/packages/bakery/bin/bakery-server" <<'STANDIN'
#!/usr/bin/env bash
echo "args: $* BAKERY_LOG=$BAKERY_LOG"
trap 'echo stopping; exit 0' TERM
while :; do sleep 0.1; done
STANDIN
chmod +x "$root/var/vcap/packages/bakery/bin/bakery-server"

pidfile="$root/var/vcap/sys/run/bakery/bakery.pid"
log="$root/var/vcap/sys/log/bakery/bakery.stdout.log"

"$ctl" start bakery &
for _ in $(seq 1 50); do
  [[ -s "$log" ]] && break
  sleep 0.1
done
pid="$(cat "$pidfile" 2>/dev/null || true)"
if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null \
  && grep -q "args: --config $root/var/vcap/jobs/bakery/config/bakery.toml BAKERY_LOG=info" "$log"; then
  ok "ctl start bakery runs bakery-server --config bakery.toml with BAKERY_LOG, pidfile names it"
else
  not_ok "ctl start bakery: pid ${pid:-none}, log: $(cat "$log" 2>/dev/null)"
fi

if "$ctl" start bakery 2>"$root/second.err" && [[ "$(cat "$pidfile")" == "$pid" ]] \
  && grep -q 'already running' "$root/second.err"; then
  ok "a second ctl start leaves the running bakery-server alone"
else
  not_ok "a second ctl start changed the pidfile or did not say it is running"
fi

"$ctl" stop bakery
if ! kill -0 "$pid" 2>/dev/null && [[ ! -e "$pidfile" ]] && grep -q stopping "$log"; then
  ok "ctl stop bakery stops it with TERM and removes the pidfile"
else
  not_ok "ctl stop bakery: process ${pid} alive or pidfile left"
fi

if "$ctl" stop bakery; then
  ok "ctl stop bakery without a running process succeeds"
else
  not_ok "ctl stop bakery without a running process failed"
fi

if "$ctl" start dnsmasq 2>"$root/dnsmasq.err"; then
  not_ok "ctl start dnsmasq succeeded though dnsmasq.enabled is false"
elif grep -q 'dnsmasq is disabled' "$root/dnsmasq.err"; then
  ok "ctl start dnsmasq refuses when dnsmasq.enabled is false"
else
  not_ok "ctl start dnsmasq failed without saying why: $(cat "$root/dnsmasq.err")"
fi

if "$ctl" restart bakery 2>/dev/null; then
  not_ok "ctl accepted an unknown action"
else
  ok "ctl rejects an unknown action"
fi

echo "ctl-test: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
