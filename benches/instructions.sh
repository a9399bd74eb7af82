#!/usr/bin/env bash
# Instructions per proxied request, counted by valgrind's callgrind: deterministic, unlike
# wall-clock figures on a shared VM. Each proxy runs under callgrind twice, serving N1 and then N2
# requests from h2load (TLS, -c 4 -m 10); (Ir(N2) - Ir(N1)) / (N2 - N1) cancels start-up and
# shutdown. Counts user-space instructions only (no kernel time, no cache misses): use it to see
# whether a change made linkpush do less work, and compare.sh for what that buys.
#
#   benches/instructions.sh                      # linkpush and nginx, /small.txt and /index.html
#   PROXIES="linkpush nginx h2o" benches/instructions.sh   # h2o too (one thread)
#   PROXIES=linkpush PATHS=/small.txt N1=1000 N2=3000 benches/instructions.sh
#   ACCESS_LOG=1 benches/instructions.sh         # every proxy logs each request, as by default
#   KEEP=/tmp/cg PROXIES=linkpush benches/instructions.sh   # keep the callgrind files there, for
#                                                           # callgrind_annotate --inclusive=yes
#   REP_MOVSB=1 benches/instructions.sh          # glibc's memcpy as it is (see below)
#
# Callgrind counts each byte a `rep movsb` moves as one instruction; the CPU retires it as one
# (a 8192-byte `rep movsb` in a loop of 1000: 8.3 M counted). glibc's memcpy uses `rep movsb` for
# copies from ~4 KB on, which rustls makes of every TLS record's plaintext (nginx's OpenSSL
# encrypts from the source buffer): on /index.html that was ~2,500 of linkpush's count and none of
# nginx's. So every proxy runs with the threshold raised past any copy here, and memcpy uses its
# vector loop, whose instructions callgrind counts as the CPU does. REP_MOVSB=1 leaves it as is.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PROXIES=${PROXIES:-"linkpush nginx"}
PATHS=${PATHS:-"/small.txt /index.html"}
N1=${N1:-1000}
N2=${N2:-3000}
LINKPUSH_BIN=${LINKPUSH_BIN:-$ROOT/target/release/linkpush}
export -n LINKPUSH_BIN

need=()
for tool in valgrind nginx h2load openssl curl; do command -v "$tool" >/dev/null || need+=("$tool"); done
[[ " $PROXIES " == *" h2o "* ]] && { command -v h2o >/dev/null || need+=(h2o); }
if [[ ${#need[@]} -gt 0 ]]; then
  echo "missing: ${need[*]} (apt-get install valgrind nginx-light nghttp2-client openssl curl)" >&2
  exit 1
fi
[[ -x $LINKPUSH_BIN ]] || (cd "$ROOT" && cargo build --release --locked)

TMP=$(mktemp -d /tmp/linkpush-instr.XXXXXX)
chmod 755 "$TMP"  # nginx workers run as nobody
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$TMP"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

ORIGIN=$(free_port); PROXY=$(free_port)
# ACCESS_LOG=1: each proxy logs every request as it does by default, as compare.sh's default round
# runs them: nginx's `access_log FILE` (format combined, unbuffered), h2o's `access-log: FILE` (its
# default format), linkpush with no [log] section (level info, one access line per request on
# stderr, here a file). Otherwise no access logs, and linkpush logs warnings only.
if [[ ${ACCESS_LOG:-0} == 1 ]]; then
  LOG_SECTION=""; NGINX_LOG="$TMP/nginx-access.log"; H2O_LOG="access-log: $TMP/h2o-access.log"
else
  LOG_SECTION=$'[log]\nlevel = "warn"\naccess_log = false'; NGINX_LOG=off; H2O_LOG=""
fi
mkdir -p "$TMP/www/static"
head -c 100 /dev/zero | tr '\0' 'x' > "$TMP/www/small.txt"
head -c 3900 /dev/zero | tr '\0' 'x' > "$TMP/www/index.html"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$TMP/key.pem" \
  -out "$TMP/cert.pem" -days 2 -subj /CN=localhost 2>/dev/null
temps="client_body_temp_path $TMP/t1; proxy_temp_path $TMP/t2; fastcgi_temp_path $TMP/t3; uwsgi_temp_path $TMP/t4; scgi_temp_path $TMP/t5;"
cat > "$TMP/origin.conf" <<CONF
worker_processes 1; daemon off; pid $TMP/origin.pid; error_log $TMP/origin.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 100000000; keepalive_timeout 600s; $temps
  server { listen 127.0.0.1:$ORIGIN; root $TMP/www;
    location = /index.html {
      add_header Link "</static/app.css>; rel=preload; as=style";
      add_header Link "</static/vendor.js>; rel=preload; as=script";
      add_header Link "</static/app.js>; rel=preload; as=script";
      add_header Link "</static/font.woff2>; rel=preload; as=font; crossorigin";
      add_header Link "</static/hero.jpg>; rel=preload; as=image";
    } } }
CONF
cat > "$TMP/nginx-proxy.conf" <<CONF
worker_processes 1; master_process off; daemon off; pid $TMP/proxy.pid; error_log $TMP/proxy.err;
events { worker_connections 4096; }
http { access_log $NGINX_LOG; $temps
  upstream origin { server 127.0.0.1:$ORIGIN; keepalive 512; keepalive_requests 100000000; }
  server { listen 127.0.0.1:$PROXY ssl http2; ssl_certificate $TMP/cert.pem; ssl_certificate_key $TMP/key.pem;
    http2_push_preload on;
    location / { proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header Host \$host; proxy_buffers 16 16k; proxy_max_temp_file_size 0; } } }
CONF
# h2o as nginx above: one thread, no access log, the same upstream.
cat > "$TMP/h2o.conf" <<CONF
$( [[ $(id -u) == 0 ]] && echo "user: root" )
pid-file: $TMP/h2o.pid
error-log: $TMP/h2o.err
num-threads: 1
$H2O_LOG
http2-casper: OFF
http2-push-preload: ON
listen:
  host: 127.0.0.1
  port: $PROXY
  ssl:
    certificate-file: $TMP/cert.pem
    key-file: $TMP/key.pem
    ocsp-update-interval: 0
hosts:
  default:
    paths:
      /:
        proxy.reverse.url: http://127.0.0.1:$ORIGIN/
        proxy.preserve-host: ON
CONF
cat > "$TMP/linkpush.toml" <<CONF
[server]
listen = "127.0.0.1:$PROXY"
[server.tls]
cert = "$TMP/cert.pem"
key = "$TMP/key.pem"
[upstream]
url = "http://127.0.0.1:$ORIGIN"
max_idle_per_host = 512
$LOG_SECTION
CONF
nginx -c "$TMP/origin.conf" -p "$TMP" & PIDS+=($!)
for _ in $(seq 1 50); do curl -s -o /dev/null "http://127.0.0.1:$ORIGIN/small.txt" && break; sleep 0.1; done

if [[ ${REP_MOVSB:-0} == 1 ]]; then TUNE=(); else
  TUNE=(GLIBC_TUNABLES=glibc.cpu.x86_rep_movsb_threshold=2000000000); fi

# Ir of one proxy run serving N requests of PATH.
instructions() { # PROXY N PATH
  local out="$TMP/cg.$1.$2" pid
  rm -f "$out".*
  case $1 in
    linkpush) env -u RUST_LOG "${TUNE[@]}" valgrind --tool=callgrind --callgrind-out-file="$out.%p" \
                "$LINKPUSH_BIN" --config "$TMP/linkpush.toml" >"$TMP/$1.log" 2>&1 & ;;
    nginx) env "${TUNE[@]}" valgrind --tool=callgrind --callgrind-out-file="$out.%p" \
             nginx -c "$TMP/nginx-proxy.conf" -p "$TMP" >"$TMP/$1.log" 2>&1 & ;;
    h2o) env "${TUNE[@]}" valgrind --tool=callgrind --callgrind-out-file="$out.%p" \
           h2o -c "$TMP/h2o.conf" >"$TMP/$1.log" 2>&1 & ;;
  esac
  pid=$!
  # This runs in a command substitution (a subshell): the parent's trap never sees $pid, so the
  # proxy is stopped here on every path.
  trap 'kill "$pid" 2>/dev/null || true' EXIT
  for _ in $(seq 1 150); do curl -sk -o /dev/null "https://127.0.0.1:$PROXY/small.txt" && break; sleep 0.2; done
  h2load -n "$2" -c 4 -m 10 "https://127.0.0.1:$PROXY$3" >"$TMP/h2load.log" 2>&1 || true
  if ! grep -q "$2 succeeded" "$TMP/h2load.log"; then
    echo "h2load failed against $1" >&2
    cat "$TMP/h2load.log" >&2
    exit 1
  fi
  if [[ $1 == nginx ]]; then kill -QUIT "$pid"; else kill -TERM "$pid"; fi
  wait "$pid" 2>/dev/null || true
  # h2o forks a helper that exits (and writes its own callgrind file) after the main process:
  # counted too, and waited for (bounded) so that the file is complete and the directory can go.
  for _ in $(seq 1 100); do pgrep -f "$TMP/" >/dev/null || break; sleep 0.1; done
  trap - EXIT
  if [[ -n ${KEEP:-} ]]; then mkdir -p "$KEEP" && cp "$out".* "$KEEP"/; fi
  grep -h "^summary:" "$out".* | awk '{s+=$2} END {print s}'
}

printf '| proxy | path | instructions per request |\n|---|---|---:|\n'
for proxy in $PROXIES; do
  for path in $PATHS; do
    a=$(instructions "$proxy" "$N1" "$path")
    b=$(instructions "$proxy" "$N2" "$path")
    printf '| %s | %s | %s |\n' "$proxy" "$path" "$(( (b - a) / (N2 - N1) ))"
  done
done
