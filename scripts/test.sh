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
# promtool: tests/metrics.rs checks a real /metrics scrape with `promtool check metrics`.
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
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

# podman and runc: tests/container.rs builds the image and runs it; without them (or not root)
# that test prints SKIP and the summary counts it as skipped.
optional=()
command -v podman >/dev/null 2>&1 || optional+=(podman)
command -v runc >/dev/null 2>&1 || optional+=(runc)
if [ ${#optional[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing: ${optional[*]}"
  export DEBIAN_FRONTEND=noninteractive
  { apt-get update -qq && apt-get install -y -qq "${optional[@]}" >/dev/null; } \
    || echo "could not install ${optional[*]}: the container test will be skipped" >&2
fi

# Chromium, for tests/chromium.rs (a real browser acting on learned 103s). Optional: where it
# cannot be installed that test prints a SKIP line and is counted below as skipped, not passed.
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing: chromium"
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } ||
      echo "chromium could not be installed; tests/chromium.rs will be skipped" >&2
  else
    echo "chromium missing (sudo apt-get install chromium); tests/chromium.rs will be skipped" >&2
  fi
fi

# h2spec (RFC 9113 conformance), run by tests/cli.rs `h2spec_*` against the built binary. Built
# offline from ../shared/tools/h2spec (beside the clone in CI). Without it those tests are
# skipped, loudly.
h2spec_build=""
for dir in ../shared ../../shared; do
  if [ -f "$dir/tools/h2spec/build.sh" ]; then h2spec_build="$dir/tools/h2spec/build.sh"; break; fi
done
if [ -z "${H2SPEC:-}" ]; then
  if [ -n "$h2spec_build" ] && h2spec_bin=$(bash "$h2spec_build" | tail -1) && [ -x "$h2spec_bin" ]; then
    export H2SPEC="$h2spec_bin"
  else
    echo "################################################################################" >&2
    echo "SKIP h2spec: ../shared/tools/h2spec/build.sh missing or failed; the h2spec_* tests will not run" >&2
    echo "################################################################################" >&2
  fi
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --locked --all-targets "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
# The vendored h2 (vendor/h2/PATCHES.md): its unit and doc tests and the patches' regression
# tests. The HPACK fixture tests need h2's fixtures/, which the crates.io package leaves out.
cargo test --locked --manifest-path vendor/h2/Cargo.toml -- --skip hpack::test::fixture 2>&1 | tee -a "$log"
h2_status=${PIPESTATUS[0]}
[ "$status" = 0 ] && status=$h2_status
# The vendored mimalloc wrapper (vendor/mimalloc/PATCHES.md): its tests and the patch's.
cargo test --locked --manifest-path vendor/mimalloc/Cargo.toml 2>&1 | tee -a "$log"
mimalloc_status=${PIPESTATUS[0]}
[ "$status" = 0 ] && status=$mimalloc_status
set -e
# One closing line for the whole run (the last binaries cargo runs are benchmark smoke checks,
# whose output would otherwise end the log).
# A test that cannot run here prints `SKIP: …` and returns: counted as skipped, not passed.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     /^SKIP: / { s++; print }
     END { printf "tests: %d passed, %d failed, %d skipped\n", p - s, f, s }' "$log"
exit "$status"
