#!/usr/bin/env bash
# What the access log costs: CPU µs per request of linkpush with `log.access_log` on and off,
# h2c, h2load on an asset. The proxy is pinned to one core (one worker), h2load and the origin
# nginx to the other; stderr goes to a file, as under a log collector.
#
#   benches/access_log.sh [LINKPUSH_BIN...]      # default: target/release/linkpush
#   N=50000 ROUNDS=2 benches/access_log.sh a b   # compare two binaries, interleaved rounds
#
# Everything it starts it stops again, by PID. Traffic goes to 127.0.0.1 only.
set -euo pipefail
N=${N:-50000}; C=${C:-32}; M=${M:-10}; ROUNDS=${ROUNDS:-2}
PROXY_CPU=${PROXY_CPU:-0}; CLIENT_CPU=${CLIENT_CPU:-1}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BINS=("$@"); [[ ${#BINS[@]} -gt 0 ]] || BINS=("$ROOT/target/release/linkpush")
TMP=$(mktemp -d); PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$TMP"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
wait_port() { for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.05; done; echo "port $1 not up" >&2; exit 1; }

ORIGIN=$(port); mkdir -p "$TMP/www/assets" "$TMP/origin"
head -c 4096 /dev/urandom | base64 >"$TMP/www/assets/app.css"
cat >"$TMP/origin/nginx.conf" <<EOF
daemon off; worker_processes 1; pid $TMP/origin/nginx.pid; error_log $TMP/origin/error.log warn;
$( [[ $(id -u) = 0 ]] && echo 'user root;' )
events { worker_connections 4096; }
http { access_log off; keepalive_requests 100000000; keepalive_timeout 600s;
  client_body_temp_path $TMP/origin/b; proxy_temp_path $TMP/origin/p; fastcgi_temp_path $TMP/origin/f;
  uwsgi_temp_path $TMP/origin/u; scgi_temp_path $TMP/origin/s;
  server { listen 127.0.0.1:$ORIGIN; root $TMP/www; } }
EOF
taskset -c "$CLIENT_CPU" nginx -p "$TMP/origin" -c "$TMP/origin/nginx.conf" & PIDS+=($!)
wait_port "$ORIGIN"

printf '%-40s %-10s %8s %10s %12s\n' binary access_log round req/s cpu_us/req
for round in $(seq "$ROUNDS"); do
  for bin in "${BINS[@]}"; do
    for access in true false; do
      P=$(port)
      cat >"$TMP/lp.toml" <<EOF
[server]
listen = "127.0.0.1:$P"
[upstream]
url = "http://127.0.0.1:$ORIGIN"
max_idle_per_host = 512
[log]
level = "info"
access_log = $access
EOF
      env -u RUST_LOG taskset -c "$PROXY_CPU" "$bin" --config "$TMP/lp.toml" 2>"$TMP/stderr.log" >/dev/null &
      LP=$!; PIDS+=($LP); wait_port "$P"
      taskset -c "$CLIENT_CPU" h2load -n 2000 -c "$C" -m "$M" "http://127.0.0.1:$P/assets/app.css" >/dev/null
      t0=$(cpu_ticks "$LP")
      out=$(taskset -c "$CLIENT_CPU" timeout 300 h2load -n "$N" -c "$C" -m "$M" "http://127.0.0.1:$P/assets/app.css")
      t1=$(cpu_ticks "$LP")
      ok=$(sed -n 's/.* \([0-9]*\) succeeded.*/\1/p' <<<"$out")
      rps=$(sed -n 's/^finished in .*, \([0-9.]*\) req\/s.*/\1/p' <<<"$out")
      us=$(python3 -c "print(round(($t1-$t0)*1e6/$(getconf CLK_TCK)/$ok,1))")
      printf '%-40s %-10s %8s %10s %12s\n' "$(basename "$bin")" "$access" "$round" "$rps" "$us"
      kill "$LP"; wait "$LP" 2>/dev/null || true
    done
  done
done
