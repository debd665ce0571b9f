#!/usr/bin/env bash
# The whole test suite, as the README gives it: installs the real peers the tests drive (SIPp),
# then format and lint checks, every test, and a build of the benchmarks.
# Under CI=true a peer that cannot be installed fails the run; the tests themselves also refuse
# to skip under CI=true.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# Debian packages that provide the programs the tests need: program=package.
needs=(sipp=sip-tester openssl=openssl)
missing=()
for need in "${needs[@]}"; do
    command -v "${need%%=*}" >/dev/null 2>&1 || missing+=("${need#*=}")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]}"
    if ! { as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }; then
        echo "cannot install ${missing[*]}" >&2
        [ "${CI:-}" = "true" ] && exit 1
    fi
fi

cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --locked
# Benchmarks are not tests, but they must keep building.
cargo bench --locked --no-run
