#!/usr/bin/env bash
# End-to-end comparison of linkpush with nginx and h2o as TLS HTTP/2 reverse proxies that push
# from `Link: <…>; rel=preload` headers.  See benches/README.md for what each number means.
#
#   benches/compare.sh                                  # full run (3 runs, all proxies, 3 rounds)
#   ROUNDS="default tuned" benches/compare.sh           # rounds: default (access logs on), tuned
#                                                       # (logs off), scale (2 workers, unpinned)
#   RUNS=1 N=5000 PROXIES="nginx h2o" benches/compare.sh   # quick look
#
# Everything it starts (origin, proxies, idle-connection holders) it stops again, by PID.
# All traffic goes to 127.0.0.1 only; every load run is bounded in requests and in time.
set -euo pipefail

# ------------------------------------------------------------------------------------ options
RUNS=${RUNS:-3}                       # runs per (scenario, proxy); the median is reported
N=${N:-50000}                         # h2load requests per run (scenarios asset, page)
C=${C:-32}                            # h2load clients (connections)
M=${M:-10}                            # h2load max concurrent streams per connection
POOL=${POOL:-128}                     # idle upstream connections: nginx `keepalive`, linkpush `max_idle_per_host`
SCENARIOS=${SCENARIOS:-"asset page handshake push idle"}  # rounds default and tuned; idle: once
ROUNDS=${ROUNDS:-"default tuned scale"}  # configurations measured in the same run (README "Rounds")
SCALE_SCENARIOS=${SCALE_SCENARIOS:-"asset page"}  # scenarios of round scale
SCALE_WORKERS=${SCALE_WORKERS:-2}     # round scale: workers (nginx processes, h2o/tokio threads)
SCALE_CLIENT_CPU=${SCALE_CLIENT_CPU-} # round scale: core for the clients (empty: not pinned)
IDLE_ROUND=${IDLE_ROUND:-default}     # configuration of the idle scenario
PROXIES=${PROXIES:-"linkpush nginx h2o"}
HANDSHAKE_N=${HANDSHAKE_N:-2000}      # scenario handshake: new connections (batches of C)
PUSH_N=${PUSH_N:-200}                 # scenario push: page loads with nghttp (1 connection each)
IDLE_CONNS=${IDLE_CONNS:-5000}        # scenario idle: idle TLS HTTP/2 connections held
WARMUP_N=${WARMUP_N:-2000}            # h2load requests sent before each measured run
PROXY_CPU=${PROXY_CPU-0}              # core for the proxy (empty: not pinned)
CLIENT_CPU=${CLIENT_CPU-1}            # core for h2load / nghttp / idle_conns.py (empty: not pinned)
ORIGIN_CPU=${ORIGIN_CPU-1}            # core for the origin nginx (empty: not pinned)
CERT_KEY=${CERT_KEY:-ec}              # ec (P-256) or rsa (2048) certificate key
OUT=${OUT:-}                          # also write the report here (see README); empty: stdout only
RAW_OUT=${RAW_OUT:-}                  # also copy the raw measurements (TSV: run scenario proxy key value) here
RATIO_BASE=${RATIO_BASE:-}            # numerator of the ratio rows (default linkpush, or first proxy)
KEEP_TMP=${KEEP_TMP:-0}               # 1: keep the temp dir (configs, logs, raw results)
INSTALL=${INSTALL:-1}                 # 1: apt-get install what is missing
H2LOAD_TIMEOUT=${H2LOAD_TIMEOUT:-300} # seconds, per client invocation
LINKPUSH_BIN=${LINKPUSH_BIN:-}        # use this binary instead of building target/release/linkpush
LINKPUSH_EXTRA_TOML=${LINKPUSH_EXTRA_TOML:-}  # appended to linkpush's config file

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$ROOT/benches
MEASURE=$BENCH/compare/measure.py

exec {LOGFD}>&2 # log through a copy of stderr: a trap may run inside a redirected command
log() { printf '[compare %s] %s\n' "$(date +%H:%M:%S)" "$*" >&"$LOGFD"; }
die() { log "error: $*"; exit 1; }

for s in $SCENARIOS; do
  case $s in asset|page|handshake|push|idle) ;; *) die "unknown scenario '$s'";; esac
done
for p in $PROXIES; do
  case $p in linkpush|nginx|h2o) ;; *) die "unknown proxy '$p'";; esac
done
for rd in $ROUNDS $IDLE_ROUND; do
  case $rd in default|tuned|scale) ;; *) die "unknown round '$rd' (default, tuned, scale)";; esac
done
for s in $SCALE_SCENARIOS; do
  case $s in asset|page|handshake|push) ;; *) die "unknown scenario '$s' in SCALE_SCENARIOS";; esac
done
has_proxy() { [[ " $PROXIES " == *" $1 "* ]]; }
has_scen() { [[ " $SCENARIOS " == *" $1 "* ]]; }
if [[ -z $RATIO_BASE ]]; then
  if has_proxy linkpush; then RATIO_BASE=linkpush; else RATIO_BASE=${PROXIES%% *}; fi
fi

# ------------------------------------------------------------------------------------ processes
STARTED=()      # PIDs this script started and has not stopped yet
LAST_PID=

# start_bg CPU LOGFILE CMD...: start CMD in the background (pinned to CPU if given); sets LAST_PID
start_bg() {
  local cpu=$1 logf=$2; shift 2
  if [[ -n $cpu ]]; then
    taskset -c "$cpu" "$@" >"$logf" 2>&1 </dev/null {LOGFD}>&- &
  else
    "$@" >"$logf" 2>&1 </dev/null {LOGFD}>&- &
  fi
  LAST_PID=$!
  STARTED+=("$LAST_PID")
}

forget_pid() { # PID: it has ended and been waited for
  local keep=() p
  for p in "${STARTED[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
  STARTED=("${keep[@]}")
}

# client SECONDS CPU OUTFILE CMD...: run a client to completion, pinned to CPU, killed after
# SECONDS. It runs in the background and is waited for, so that a signal to this script is
# acted on at once (and the cleanup stops the client by its PID).
client() {
  local secs=$1 cpu=$2 outf=$3 rc=0; shift 3
  start_bg "$cpu" "$outf" timeout "$secs" "$@"
  wait "$LAST_PID" || rc=$?
  forget_pid "$LAST_PID"
  return "$rc"
}

alive() { # PID: true while PID exists and is not a zombie
  local st
  st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ -n $st && $st != Z ]]
}

# stop_pid PID: SIGTERM it, wait (bounded), then SIGKILL it and any of its descendants left over
stop_pid() {
  local pid=$1 kids i
  kids=$(python3 "$MEASURE" tree "$pid" 2>/dev/null | tail -n +2 | tr '\n' ' ') || kids=
  if alive "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do alive "$pid" || break; sleep 0.1; done
    if alive "$pid"; then log "pid $pid ignored SIGTERM for 10 s: SIGKILL"; kill -KILL "$pid" 2>/dev/null || true; fi
  fi
  wait "$pid" 2>/dev/null || true
  for k in $kids; do
    for ((i = 0; i < 30; i++)); do alive "$k" || break; sleep 0.1; done
    if alive "$k"; then kill -KILL "$k" 2>/dev/null || true; fi
  done
  forget_pid "$pid"
}

TMP=
cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  for pid in "${STARTED[@]}"; do stop_pid "$pid"; done
  if [[ -n $TMP && -d $TMP ]]; then
    if [[ $KEEP_TMP == 1 || $rc != 0 ]]; then log "kept $TMP"; else rm -rf "$TMP"; fi
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ------------------------------------------------------------------------------------ tools
ensure_tools() {
  local pkgs=()
  command -v nginx >/dev/null || pkgs+=(nginx-light)
  if has_proxy h2o; then command -v h2o >/dev/null || pkgs+=(h2o); fi
  { command -v h2load >/dev/null && command -v nghttp >/dev/null; } || pkgs+=(nghttp2-client)
  command -v openssl >/dev/null || pkgs+=(openssl)
  command -v curl >/dev/null || pkgs+=(curl)
  command -v taskset >/dev/null || pkgs+=(util-linux)
  command -v python3 >/dev/null || pkgs+=(python3)
  ((${#pkgs[@]})) || return 0
  [[ $INSTALL == 1 ]] || die "missing packages: ${pkgs[*]} (INSTALL=0)"
  [[ $(id -u) == 0 ]] || die "missing packages: ${pkgs[*]}; run as root or install them"
  local i
  for ((i = 0; i < 900; i++)); do # another apt-get/dpkg at work: wait for it (15 min at most)
    pgrep -x apt-get >/dev/null || pgrep -x dpkg >/dev/null || break
    ((i % 30)) || log "waiting for a running apt-get/dpkg to finish"
    sleep 1
  done
  # Keep the packages' maintainer scripts from starting system nginx/h2o services.
  local made_policy=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && made_policy=1
  fi
  log "apt-get install ${pkgs[*]}"
  local ok=0
  export DEBIAN_FRONTEND=noninteractive
  if apt-get install -y --no-install-recommends "${pkgs[@]}"; then ok=1
  else
    apt-get update && apt-get install -y --no-install-recommends "${pkgs[@]}" && ok=1
    if ((!ok)) && [[ " ${pkgs[*]} " == *" nginx-light "* ]]; then # newer Debian: no nginx-light
      pkgs=("${pkgs[@]/nginx-light/nginx}")
      apt-get install -y --no-install-recommends "${pkgs[@]}" && ok=1
    fi
  fi
  ((made_policy)) && rm -f /usr/sbin/policy-rc.d
  ((ok)) || die "apt-get install ${pkgs[*]} failed"
}

ensure_linkpush() {
  if [[ -n $LINKPUSH_BIN ]]; then
    [[ -x $LINKPUSH_BIN ]] || die "LINKPUSH_BIN=$LINKPUSH_BIN is not executable"
    return
  fi
  LINKPUSH_BIN=$ROOT/target/release/linkpush
  if [[ ! -x $LINKPUSH_BIN ]] ||
    [[ -n $(find "$ROOT/src" "$ROOT/Cargo.toml" "$ROOT/Cargo.lock" -newer "$LINKPUSH_BIN" -print -quit 2>/dev/null) ]]; then
    log "building linkpush (cargo build --release --locked)"
    (cd "$ROOT" && cargo build --release --locked) || die "cargo build failed"
  fi
  [[ -x $LINKPUSH_BIN ]] || die "no binary at $LINKPUSH_BIN after the build"
}

check_cpus() { # drop pinning to cores this machine does not have
  local ncpu
  ncpu=$(nproc)
  for v in PROXY_CPU CLIENT_CPU ORIGIN_CPU; do
    if [[ -n ${!v} ]] && ! taskset -c "${!v}" true 2>/dev/null; then
      log "$v=${!v} is not usable on this machine ($ncpu cores): not pinning"
      printf -v "$v" '%s' ''
    fi
  done
}

raise_nofile() {
  local want=$((IDLE_CONNS * 2 + 4096))
  ((want >= 65536)) || want=65536
  if (($(ulimit -Hn) < want)); then ulimit -Hn "$want" 2>/dev/null || true; fi
  ulimit -Sn "$(ulimit -Hn)" 2>/dev/null || true
  if (($(ulimit -n) < IDLE_CONNS + 1024)); then
    log "warning: open files limit $(ulimit -n) is too low for $IDLE_CONNS idle connections"
  fi
}

# ------------------------------------------------------------------------------------ setup
ensure_tools
for t in nginx h2load nghttp openssl curl taskset python3; do command -v $t >/dev/null || die "$t not found"; done
has_proxy h2o && { command -v h2o >/dev/null || die "h2o not found"; }
has_proxy linkpush && ensure_linkpush
check_cpus
raise_nofile

TMP=$(mktemp -d /tmp/linkpush-compare.XXXXXX)
RAW=$TMP/raw.tsv
: >"$RAW"
log "work dir $TMP"

read -r ORIGIN_PORT P_linkpush P_nginx P_h2o <<<"$(python3 "$MEASURE" freeports 4)"
declare -A PORT=([linkpush]=$P_linkpush [nginx]=$P_nginx [h2o]=$P_h2o)
RUN_AS_ROOT=0
[[ $(id -u) == 0 ]] && RUN_AS_ROOT=1

# One self-signed certificate per run, shared by all three proxies.
case $CERT_KEY in
  ec) KEYOPT=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1) ;;
  rsa) KEYOPT=(-newkey rsa:2048) ;;
  *) die "CERT_KEY must be ec or rsa" ;;
esac
openssl req -x509 "${KEYOPT[@]}" -nodes -days 7 -subj "/CN=localhost" \
  -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
  -keyout "$TMP/key.pem" -out "$TMP/cert.pem" 2>"$TMP/openssl.log" || die "openssl failed: $(cat "$TMP/openssl.log")"

# The site: a page with five preload links, its assets, and a small file.
WWW=$TMP/www
mkdir -p "$WWW/static"
mkfile() { # PATH SIZE: SIZE bytes of random base64 text, lines of 100
  python3 -c 'import base64,os,sys; n=int(sys.argv[2]); b=base64.encodebytes(os.urandom(n))[:n]; open(sys.argv[1],"wb").write(b)' "$WWW/$1" "$2"
}
mkfile static/app.css 20480
mkfile static/app.js 81920
mkfile static/font.woff2 30720
mkfile static/hero.jpg 51200
mkfile static/vendor.js 10240
head -c 100 /dev/zero | tr '\0' 'x' >"$WWW/small.txt"
{
  echo '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>linkpush bench</title>'
  echo '<link rel="stylesheet" href="/static/app.css"><script src="/static/vendor.js" defer></script>'
  echo '<script src="/static/app.js" defer></script></head><body><img src="/static/hero.jpg" alt="">'
  for i in $(seq 40); do echo "<p>Paragraph $i of the benchmark page, some ordinary text to give it a realistic size.</p>"; done
  echo '</body></html>'
} >"$WWW/index.html"
PAGE_LINKS=(
  '</static/app.css>; rel=preload; as=style'
  '</static/vendor.js>; rel=preload; as=script'
  '</static/app.js>; rel=preload; as=script'
  '</static/font.woff2>; rel=preload; as=font; type="font/woff2"; crossorigin'
  '</static/hero.jpg>; rel=preload; as=image'
)

NGINX_USER=
((RUN_AS_ROOT)) && NGINX_USER='user root;'
nginx_common() { # DIR WORKERS
  cat <<EOF
$NGINX_USER
daemon off;
master_process on;
worker_processes $2;
worker_rlimit_nofile $((IDLE_CONNS * 2 + 4096));
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections $((IDLE_CONNS * 2 + 1024)); }
EOF
}
nginx_http_common() { # DIR ACCESS_LOG ("off", or a file: nginx's default "combined" format, unbuffered)
  cat <<EOF
  access_log $2;
  client_body_temp_path $1/client_body;
  proxy_temp_path $1/proxy;
  fastcgi_temp_path $1/fastcgi;
  uwsgi_temp_path $1/uwsgi;
  scgi_temp_path $1/scgi;
  keepalive_timeout 600s;
  keepalive_requests 100000000;
  client_header_timeout 600s;
EOF
}

# Origin: a plain HTTP/1.1 nginx serving the site, own prefix and config, not the system nginx.
mkdir -p "$TMP/origin"
{
  nginx_common "$TMP/origin" 1
  echo "http {"
  nginx_http_common "$TMP/origin" off
  cat <<EOF
  sendfile on;
  tcp_nodelay on;
  types { text/html html; text/css css; application/javascript js; font/woff2 woff2; image/jpeg jpg; text/plain txt; }
  default_type application/octet-stream;
  server {
    listen 127.0.0.1:$ORIGIN_PORT backlog=4096;
    root $WWW;
    location = /_status { stub_status; }   # "accepts": connections opened by the proxy
    location = /index.html {
EOF
  for l in "${PAGE_LINKS[@]}"; do printf "      add_header Link '%s';\n" "$l"; done
  cat <<EOF
    }
  }
}
EOF
} >"$TMP/origin/nginx.conf"

# The rounds (README "Rounds"): what differs between them is the access logs and the workers.
#   default  what an operator runs: access logs on, in each server's default format and place
#            (nginx and h2o: a file; linkpush: stderr, which goes to a file as under a container
#            runtime), linkpush's [log] section absent (level info, access_log true);
#   tuned    all three access logs off, linkpush at level warn;
#   scale    tuned, with two workers each and no pinning.
round_workers() { [[ $1 == scale ]] && echo "$SCALE_WORKERS" || echo 1; }
round_cpu() { [[ $1 == scale ]] && echo "" || echo "$PROXY_CPU"; }
round_client_cpu() { [[ $1 == scale ]] && echo "$SCALE_CLIENT_CPU" || echo "$CLIENT_CPU"; }
round_scens() { [[ $1 == scale ]] && echo "$SCALE_SCENARIOS" || echo "$SCENARIOS"; }
round_logs() { [[ $1 == default ]]; }

# write_configs ROUND: the three proxies' configuration files under $TMP/ROUND/NAME/.
write_configs() {
  local round=$1 workers d
  workers=$(round_workers "$round")

  # nginx as a TLS HTTP/2 proxy that pushes from Link headers.
  d=$TMP/$round/nginx
  mkdir -p "$d"
  {
    nginx_common "$d" "$workers"
    echo "http {"
    if round_logs "$round"; then nginx_http_common "$d" "$d/access.log"; else nginx_http_common "$d" off; fi
    cat <<EOF
  upstream origin {
    server 127.0.0.1:$ORIGIN_PORT;
    keepalive $POOL;                     # idle upstream connections kept (see POOL)
    keepalive_requests 100000000;
    keepalive_timeout 600s;
  }
  server {
    listen 127.0.0.1:${PORT[nginx]} ssl http2 backlog=4096;
    ssl_certificate $TMP/cert.pem;
    ssl_certificate_key $TMP/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    location / {
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto \$scheme;
      proxy_set_header X-Forwarded-Host \$host;
      proxy_buffers 16 16k;             # whole assets in memory, no temp files
      proxy_max_temp_file_size 0;
      http2_push_preload on;
    }
  }
}
EOF
  } >"$d/nginx.conf"

  # h2o as a TLS HTTP/2 proxy that pushes from Link headers (casper off: push every time).
  d=$TMP/$round/h2o
  mkdir -p "$d"
  {
    ((RUN_AS_ROOT)) && echo "user: root"
    cat <<EOF
pid-file: $d/h2o.pid
error-log: $d/error.log
num-threads: $workers
max-connections: $((IDLE_CONNS * 2 + 1024))
http2-idle-timeout: 600
http1-request-timeout: 600
http2-casper: OFF
http2-push-preload: ON
EOF
    # h2o's default access-log format is Apache's combined; a file path is all it needs.
    if round_logs "$round"; then echo "access-log: $d/access.log"; fi
    cat <<EOF
listen:
  host: 127.0.0.1
  port: ${PORT[h2o]}
  ssl:
    certificate-file: $TMP/cert.pem
    key-file: $TMP/key.pem
    minimum-version: TLSv1.2
    ocsp-update-interval: 0
hosts:
  default:
    paths:
      /:
        proxy.reverse.url: http://127.0.0.1:$ORIGIN_PORT/
        proxy.preserve-host: ON
EOF
  } >"$d/h2o.conf"

  # linkpush, configured per SPEC §2. Its worker count is tokio's default (one per core it may
  # run on: one when pinned); the scale round sets TOKIO_WORKER_THREADS (start_proxy).
  d=$TMP/$round/linkpush
  mkdir -p "$d"
  {
    cat <<EOF
[server]
listen = "127.0.0.1:${PORT[linkpush]}"
idle_timeout = "600s"

[server.tls]
cert = "$TMP/cert.pem"
key = "$TMP/key.pem"

[upstream]
url = "http://127.0.0.1:$ORIGIN_PORT"
# The same bound on idle upstream connections as nginx's "keepalive $POOL" (see POOL).
max_idle_per_host = $POOL
EOF
    if ! round_logs "$round"; then
      printf '\n[log]\nlevel = "warn"\naccess_log = false\n'
    fi
    if [[ -n $LINKPUSH_EXTRA_TOML ]]; then printf '%s\n' "$LINKPUSH_EXTRA_TOML"; fi
  } >"$d/linkpush.toml"
}
for rd in $ROUNDS $IDLE_ROUND; do write_configs "$rd"; done

# Proxies run with a clean environment as far as their own settings go. The harness's own
# LINKPUSH_BIN / LINKPUSH_EXTRA_TOML stay shell variables but are not passed on: linkpush rejects
# unknown LINKPUSH_* variables. TOKIO_WORKER_THREADS would change linkpush's worker count.
export -n LINKPUSH_BIN LINKPUSH_EXTRA_TOML
unset TOKIO_WORKER_THREADS
for v in $(compgen -e); do
  if [[ $v == LINKPUSH_* && $v != LINKPUSH_BIN && $v != LINKPUSH_EXTRA_TOML ]]; then
    log "unsetting $v for the proxy (use LINKPUSH_EXTRA_TOML to change linkpush's config)"
    unset "$v"
  fi
done

if has_proxy linkpush; then
  for rd in $ROUNDS $IDLE_ROUND; do
    "$LINKPUSH_BIN" check --config "$TMP/$rd/linkpush/linkpush.toml" >"$TMP/$rd/linkpush/check.log" 2>&1 ||
      die "linkpush rejects the config $TMP/$rd/linkpush/linkpush.toml: $(tail -n 3 "$TMP/$rd/linkpush/check.log")"
  done
fi
# ------------------------------------------------------------------------------------ servers
wait_http() { # URL NAME PID LOG: bounded wait until URL answers 200
  local i code
  for ((i = 0; i < 150; i++)); do
    alive "$3" || die "$2 exited at start; see its log: $(tail -n 5 "$4" 2>/dev/null)"
    code=$(curl -sk --http2 -o /dev/null -w '%{http_code}' --max-time 2 "$1" 2>/dev/null) || true
    [[ $code == 200 ]] && return 0
    sleep 0.1
  done
  die "$2 did not answer 200 on $1 within 15 s"
}

ORIGIN_PID=
start_origin() {
  start_bg "$ORIGIN_CPU" "$TMP/origin/stdout.log" nginx -p "$TMP/origin" -c "$TMP/origin/nginx.conf"
  ORIGIN_PID=$LAST_PID
  wait_http "http://127.0.0.1:$ORIGIN_PORT/small.txt" origin "$ORIGIN_PID" "$TMP/origin/stdout.log"
}

# The round whose configuration start_proxy uses, and its pinning (set_round).
ROUND= CUR_PROXY_CPU= CUR_CLIENT_CPU=
set_round() { ROUND=$1; CUR_PROXY_CPU=$(round_cpu "$1"); CUR_CLIENT_CPU=$(round_client_cpu "$1"); }

PROXY_PID=
# start_proxy NAME: a fresh NAME with the configuration of $ROUND. Its stdout and stderr go to
# $TMP/ROUND/NAME/output.log (linkpush's access log in round default, as a container runtime
# would keep it); the access logs and that file start empty for each measurement.
start_proxy() {
  local name=$1 d=$TMP/$ROUND/$1 workers
  workers=$(round_workers "$ROUND")
  rm -f "$d/access.log"
  case $name in
    nginx) start_bg "$CUR_PROXY_CPU" "$d/output.log" nginx -p "$d" -c "$d/nginx.conf" ;;
    h2o) start_bg "$CUR_PROXY_CPU" "$d/output.log" h2o -m worker -c "$d/h2o.conf" ;;
    linkpush)
      if [[ $ROUND == scale ]]; then # tokio would take one worker per core of the machine
        start_bg "$CUR_PROXY_CPU" "$d/output.log" env -u RUST_LOG TOKIO_WORKER_THREADS="$workers" "$LINKPUSH_BIN" --config "$d/linkpush.toml"
      else # pinned to one core: tokio's default runtime runs one worker
        start_bg "$CUR_PROXY_CPU" "$d/output.log" env -u RUST_LOG "$LINKPUSH_BIN" --config "$d/linkpush.toml"
      fi ;;
  esac
  PROXY_PID=$LAST_PID
  wait_http "https://127.0.0.1:${PORT[$name]}/small.txt" "$name" "$PROXY_PID" "$d/output.log"
}
stop_proxy() { stop_pid "$PROXY_PID"; PROXY_PID=; }

# Sanity checks, once per (round, proxy): the page's Link headers come through and pushes are
# made; a request that is not a navigation gets no 103 even once the route is learned (SPEC §6:
# learned hints go to navigations only, so h2load, which sends no Sec-Fetch-*, measures
# proxying); in round default the access logs are written.
check_proxy() { # NAME
  local name=$1 d=$TMP/$ROUND/$1 url="https://127.0.0.1:${PORT[$1]}/index.html" pushed hints i
  client 20 "$CUR_CLIENT_CPU" "$d/check-nghttp.txt" nghttp -ns "$url" || true
  pushed=$(grep -cE '^\s*[0-9]+\s+\+\S+\s+\*' "$d/check-nghttp.txt" || true)
  log "$ROUND $name: nghttp sees $pushed pushed streams for /index.html (${#PAGE_LINKS[@]} expected)"
  for i in 1 2; do # the first response teaches the route its links; the second could get a 103
    client 20 "$CUR_CLIENT_CPU" "$d/check-curl-$i.txt" curl -sk --http2 -o /dev/null -D - "$url" || true
  done
  hints=$(grep -c '^HTTP/2 103' "$d/check-curl-2.txt" || true)
  if ((hints > 0)); then
    log "$ROUND $name: WARNING: a request without Sec-Fetch-Mode got $hints 103 response(s): h2load would measure hints too"
  else
    log "$ROUND $name: no 103 for a request that is not a navigation (as h2load's)"
  fi
  if round_logs "$ROUND"; then
    local f=$d/access.log
    [[ $name == linkpush ]] && f=$d/output.log
    log "$ROUND $name: access log $f: $(wc -l <"$f" 2>/dev/null || echo 0) lines after the checks"
  fi
}

# ------------------------------------------------------------------------------------ scenarios
# rec SCEN NAME KEY VALUE: one raw measurement; load scenarios are recorded as ROUND/SCEN
rec() { printf '%s\t%s\t%s\t%s\t%s\n' "$RUN" "$1" "$2" "$3" "$4" >>"$RAW"; }

snap() { python3 "$MEASURE" snap "$PROXY_PID"; }  # cpu_ticks hwm_kib rss_kib nprocs user_ticks system_ticks

origin_accepts() { # connections the origin has accepted so far (this query's own included)
  curl -s --max-time 5 "http://127.0.0.1:$ORIGIN_PORT/_status" | awk 'NR == 3 { print $1 }'
}

h2load_run() { # URL N C M OUTPREFIX: one bounded h2load run with a per-request log
  client "$H2LOAD_TIMEOUT" "$CUR_CLIENT_CPU" "$5.out" python3 "$MEASURE" rusage "$5.cpu" \
    h2load -n "$2" -c "$3" -m "$4" --log-file="$5.log" "$1" || log "h2load exited non-zero (see $5.out)"
}

# measure SCEN NAME: one measured run of SCEN against proxy NAME (already started and warm)
measure() {
  local scen=$1 name=$2 base="https://127.0.0.1:${PORT[$2]}" d="$TMP/res/$RUN/$ROUND/$1/$2" key=$ROUND/$1
  mkdir -p "$d"
  local c0 c1 u0 u1 s0 s1 hwm rss np kv a0 a1 o0 o1
  a0=$(origin_accepts)
  read -r c0 _ _ _ u0 s0 <<<"$(snap)"
  read -r o0 _ <<<"$(python3 "$MEASURE" snap "$ORIGIN_PID")"
  case $scen in
    asset|page)
      local path=/small.txt
      [[ $scen == page ]] && path=/index.html
      h2load_run "$base$path" "$N" "$C" "$M" "$d/h2load"
      kv=$(python3 "$MEASURE" h2load "$d/h2load.out" "$d/h2load.log")
      ;;
    handshake)
      local b nb=$(((HANDSHAKE_N + C - 1) / C))
      for ((b = 0; b < nb; b++)); do
        h2load_run "$base/small.txt" "$C" "$C" 1 "$(printf '%s/batch-%05d' "$d" "$b")"
      done
      kv=$(python3 "$MEASURE" handshake "$d")
      ;;
    push)
      local i
      for ((i = 0; i < PUSH_N; i++)); do
        client 20 "$CUR_CLIENT_CPU" "$(printf '%s/load-%05d.out' "$d" "$i")" nghttp -ns "$base/index.html" || true
      done
      kv=$(python3 "$MEASURE" nghttp "$d")
      ;;
  esac
  read -r c1 hwm rss np u1 s1 <<<"$(snap)"
  read -r o1 _ <<<"$(python3 "$MEASURE" snap "$ORIGIN_PID")"
  a1=$(origin_accepts)
  [[ -n $a0 && -n $a1 ]] && rec "$key" "$name" origin_conns "$((a1 - a0 - 1))"
  printf '%s\n' "$kv" >"$d/metrics.txt"
  local k v succeeded=0
  while IFS='=' read -r k v; do
    [[ -z $k ]] && continue
    case $k in
      h2load_rps) rec "$key" "$name" rps "$v" ;;
      p50_ms | p99_ms | failed | pushes_per_page | data_bytes_per_req | connect_mean_ms) rec "$key" "$name" "$k" "$v" ;;
      bytes_per_page) rec "$key" "$name" kib_per_page "$(python3 -c "print($v / 1024)")" ;;
      succeeded) succeeded=$v ;;
    esac
  done <<<"$kv"
  rec "$key" "$name" succeeded "$succeeded"
  if ((succeeded > 0)); then
    rec "$key" "$name" cpu_us_per_req "$(python3 -c "print(($c1 - $c0) * 1e6 / $(getconf CLK_TCK) / $succeeded)")"
    # The same CPU split into user space and kernel (raw output only: a tick is 10 ms, so one
    # run's split is coarse; pool runs to compare it).
    rec "$key" "$name" user_us_per_req "$(python3 -c "print(($u1 - $u0) * 1e6 / $(getconf CLK_TCK) / $succeeded)")"
    rec "$key" "$name" system_us_per_req "$(python3 -c "print(($s1 - $s0) * 1e6 / $(getconf CLK_TCK) / $succeeded)")"
    # The other core's share of each request (asset, page): the client's CPU time and the
    # origin's, which run there together (CLIENT_CPU, ORIGIN_CPU).
    if [[ $scen == asset || $scen == page ]]; then
      rec "$key" "$name" origin_cpu_us_per_req "$(python3 -c "print(($o1 - $o0) * 1e6 / $(getconf CLK_TCK) / $succeeded)")"
      [[ -s $d/h2load.cpu ]] && rec "$key" "$name" client_cpu_us_per_req "$(awk -v n="$succeeded" '{ print ($1 + $2) * 1e6 / n }' "$d/h2load.cpu")"
    fi
  fi
  rec "$key" "$name" peak_rss_mib "$(python3 -c "print($hwm / 1024)")"
  log "run $RUN $ROUND $scen $name: $(printf '%s\n' "$kv" | grep -E '^(h2load_rps|p50_ms|p99_ms|failed|pushes_per_page)=' | tr '\n' ' ')cpu=$((c1 - c0)) ticks, $np procs"
}

warmup() { # SCEN NAME
  local base="https://127.0.0.1:${PORT[$2]}" d="$TMP/res/$RUN/$ROUND/$1/$2"
  mkdir -p "$d"
  case $1 in
    asset) h2load_run "$base/small.txt" "$WARMUP_N" "$C" "$M" "$d/warmup" ;;
    page) h2load_run "$base/index.html" "$WARMUP_N" "$C" "$M" "$d/warmup" ;;
    handshake) h2load_run "$base/small.txt" "$C" "$C" 1 "$d/warmup" ;;
    push) client 20 "$CUR_CLIENT_CPU" "$d/warmup.out" nghttp -ns "$base/index.html" || true ;;
  esac
}

# idle NAME: memory per idle TLS HTTP/2 connection (fresh proxy, once per proxy, configuration
# of $IDLE_ROUND)
idle() {
  local name=$1 d="$TMP/res/idle/$1"
  mkdir -p "$d"
  start_proxy "$name"
  # warm: a few connections and requests, so lazily set-up state is not counted per connection
  h2load_run "https://127.0.0.1:${PORT[$name]}/small.txt" 200 20 1 "$d/warmup"
  sleep 1
  local rss0 rss1 i ready=0 opened alive_n
  read -r _ _ rss0 _ <<<"$(snap)"
  start_bg "$CUR_CLIENT_CPU" "$d/idle_conns.out" python3 "$BENCH/idle_conns.py" \
    --host 127.0.0.1 --port "${PORT[$name]}" -n "$IDLE_CONNS" --hold 900
  local holder=$LAST_PID
  for ((i = 0; i < 1800; i++)); do # 180 s at most
    if grep -q '^READY' "$d/idle_conns.out" 2>/dev/null; then ready=1; break; fi
    alive "$holder" || break
    sleep 0.1
  done
  if ((ready)); then
    sleep 2
    read -r _ _ rss1 _ <<<"$(snap)"
  fi
  stop_pid "$holder"
  stop_proxy
  if ((!ready)); then
    log "idle $name: holder did not get ready: $(tail -n 3 "$d/idle_conns.out")"
    return
  fi
  opened=$(sed -n 's/^READY opened=\([0-9]*\).*/\1/p' "$d/idle_conns.out")
  alive_n=$(sed -n 's/^FINAL .*alive=\([0-9]*\).*/\1/p' "$d/idle_conns.out")
  [[ -n $alive_n ]] || alive_n=$opened
  RUN=idle
  rec idle "$name" opened "$opened"
  rec idle "$name" alive "$alive_n"
  rec idle "$name" rss_before_mib "$(python3 -c "print($rss0 / 1024)")"
  rec idle "$name" rss_after_mib "$(python3 -c "print($rss1 / 1024)")"
  ((alive_n > 0)) && rec idle "$name" bytes_per_conn "$(python3 -c "print(($rss1 - $rss0) * 1024 / $alive_n)")"
  log "idle $name: opened=$opened alive=$alive_n rss ${rss0} -> ${rss1} KiB"
}

# ------------------------------------------------------------------------------------ main
start_origin
log "origin nginx on 127.0.0.1:$ORIGIN_PORT (pid $ORIGIN_PID); proxies: $(for p in $PROXIES; do printf '%s:%s ' "$p" "${PORT[$p]}"; done)"
log "rounds: $ROUNDS; pinning: proxy cpu '${PROXY_CPU}', client cpu '${CLIENT_CPU}', origin cpu '${ORIGIN_CPU}' (round scale: proxy unpinned, client cpu '${SCALE_CLIENT_CPU}')"
START_S=$SECONDS

for rd in $ROUNDS; do
  set_round "$rd"
  for p in $PROXIES; do
    start_proxy "$p"
    check_proxy "$p"
    stop_proxy
  done
done

# Interleaved: every run goes through every round, scenario and proxy, so slow drift on the
# machine spreads over all of them.
for ((r = 1; r <= RUNS; r++)); do
  RUN=$r
  for rd in $ROUNDS; do
    set_round "$rd"
    for s in $(round_scens "$rd"); do
      [[ $s == idle ]] && continue
      for p in $PROXIES; do # one proxy at a time; a fresh process per measurement
        start_proxy "$p"
        warmup "$s" "$p"
        measure "$s" "$p"
        stop_proxy
      done
    done
  done
done

if has_scen idle && ((IDLE_CONNS > 0)); then
  set_round "$IDLE_ROUND"
  for p in $PROXIES; do idle "$p"; done
fi

stop_pid "$ORIGIN_PID"

# ------------------------------------------------------------------------------------ report
REPORT=$TMP/report.md
{
  echo "### linkpush vs nginx vs h2o — $(date -u +%Y-%m-%d) on $(nproc) cores"
  echo
  versions="$(nginx -v 2>&1 | sed 's/^nginx version: //')"
  has_proxy h2o && versions+=", $(h2o --version | head -1 | sed 's/ version / /')"
  has_proxy linkpush && versions+=", $("$LINKPUSH_BIN" --version 2>/dev/null | head -1 || echo linkpush)"
  versions+=", $(h2load --version | head -1 | sed 's/^h2load //') h2load"
  echo "Versions: $versions."
  echo "Settings: RUNS=$RUNS (median shown), N=$N C=$C M=$M, HANDSHAKE_N=$HANDSHAKE_N, PUSH_N=$PUSH_N, IDLE_CONNS=$IDLE_CONNS, cert $CERT_KEY;"
  echo "rounds: $ROUNDS (interleaved within each run); whole run $(((SECONDS - START_S + 30) / 60)) min."
  echo "Pinning in rounds default and tuned: proxy on cpu '${PROXY_CPU:-any}' (one worker), client on '${CLIENT_CPU:-any}', origin on '${ORIGIN_CPU:-any}'."
  echo "Upstream pool: nginx \`keepalive $POOL\`, so linkpush gets \`max_idle_per_host = $POOL\` (its default is 64) in every round, as in issue 9's measurement; h2o's pool has no such limit. About 320 requests are in flight: nginx closes an idle connection beyond its bound at once and reconnects for a later request; linkpush keeps those for 2 s (column \"origin conns\": connections opened during the measured run)."
  echo "Ratios are $RATIO_BASE/other (for req/s higher is better, for the rest lower is better)."
  echo
  for rd in $ROUNDS; do
    case $rd in
      default) echo "- **default**: what an operator runs. Access logs on: nginx's \`access_log FILE\` (format combined, unbuffered), h2o's \`access-log: FILE\` (its default format), linkpush with no \`[log]\` section (level info, \`access_log = true\`: one line per request on stderr, which goes to a file). One worker each." ;;
      tuned) echo "- **tuned**: all three access logs off (nginx \`access_log off\`, h2o none, linkpush \`level = \"warn\"\`, \`access_log = false\`). One worker each." ;;
      scale) echo "- **scale**: tuned with $SCALE_WORKERS workers each (nginx \`worker_processes $SCALE_WORKERS\`, h2o \`num-threads: $SCALE_WORKERS\`, linkpush \`TOKIO_WORKER_THREADS=$SCALE_WORKERS\`), proxy not pinned, client on cpu '${SCALE_CLIENT_CPU:-any}' (h2load runs one thread), origin on '${ORIGIN_CPU:-any}'. Scenarios: $SCALE_SCENARIOS." ;;
    esac
  done
  if has_scen idle && ((IDLE_CONNS > 0)); then echo "- **idle**: memory per idle connection, configuration of round $IDLE_ROUND."; fi
  echo
  KEYS=$(for rd in $ROUNDS; do for sc in $(round_scens "$rd"); do [[ $sc == idle ]] || printf '%s/%s ' "$rd" "$sc"; done; done)
  echo "#### Summary (medians; CPU per request, per connection in handshake, per page load in push)"
  echo
  python3 "$MEASURE" summary "$RAW" "$PROXIES" "$KEYS" "$RATIO_BASE"
  for rd in $ROUNDS; do
    echo "#### Round $rd"
    echo
    python3 "$MEASURE" report "$RAW" "$PROXIES" "$(for sc in $(round_scens "$rd"); do printf '%s/%s ' "$rd" "$sc"; done)" "$RATIO_BASE" |
      sed 's/^#### /##### /'
  done
  if has_scen idle; then python3 "$MEASURE" report "$RAW" "$PROXIES" idle "$RATIO_BASE"; fi
} >"$REPORT"
cat "$REPORT"

if [[ -n $OUT ]]; then
  BEGIN='<!-- benches/compare.sh:begin -->' END='<!-- benches/compare.sh:end -->'
  if [[ -f $OUT ]] && grep -qF "$BEGIN" "$OUT" && grep -qF "$END" "$OUT"; then
    python3 - "$OUT" "$REPORT" "$BEGIN" "$END" <<'PY'
import sys
out, rep, b, e = sys.argv[1:5]
text = open(out).read()
i, j = text.index(b) + len(b), text.index(e)
open(out, "w").write(text[:i] + "\n" + open(rep).read() + text[j:])
PY
    log "replaced the section between the markers in $OUT"
  else
    mkdir -p "$(dirname "$OUT")"
    { [[ -s $OUT ]] && echo; echo "$BEGIN"; cat "$REPORT"; echo "$END"; } >>"$OUT"
    log "appended the report to $OUT"
  fi
fi
if [[ -n $RAW_OUT ]]; then cp "$RAW" "$RAW_OUT"; log "raw measurements in $RAW_OUT"; fi
