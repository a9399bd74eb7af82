#!/usr/bin/env bash
# The test command (README): installs what the end-to-end tests need when it is missing, then
# runs the whole suite. Safe to run again; installs nothing when everything is there.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v nghttp >/dev/null 2>&1 || need+=(nghttp2-client)
command -v curl >/dev/null 2>&1 || need+=(curl)
# nghttpd: an independent HTTP/2 server the test-support selftests check our clients against.
command -v nghttpd >/dev/null 2>&1 || need+=(nghttp2-server)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "missing: ${need[*]} (install them: sudo apt-get install ${need[*]})" >&2
    exit 1
  fi
fi

# Chromium, for tests/chromium.rs (a real browser acting on learned 103s). Optional: where it
# cannot be installed that test prints a SKIPPED line and is counted below as skipped, not passed.
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing: chromium"
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } ||
      echo "SKIP: chromium could not be installed; tests/chromium.rs will be skipped" >&2
  else
    echo "SKIP: chromium missing (sudo apt-get install chromium); tests/chromium.rs will be skipped" >&2
  fi
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --locked --all-targets "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line for the whole run (the last binaries cargo runs are benchmark smoke checks,
# whose output would otherwise end the log).
# A test that could not run writes a 'SKIPPED: ' line; the harness counted it as passed.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     /^SKIPPED: / { s += 1; print }
     END { if (s) printf "tests: %d passed, %d failed, %d skipped\n", p - s, f, s;
           else printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
