#!/usr/bin/env bash
# Builds the binary the Dockerfile copies: serin, statically linked (glibc's static
# runtime, so no musl toolchain is needed), and checks that it has no dynamic
# dependencies and runs with an empty environment and no shell.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
target=x86_64-unknown-linux-gnu
# Its own target directory: the static build does not share artifacts with the debug one.
export CARGO_TARGET_DIR="$repo/target/static"
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked --target "$target" --bin serin
bin="target/static/$target/release/serin"
if ldd "$bin" 2>&1 | grep -q "=>"; then
  echo "build-static: $bin is dynamically linked:" >&2
  ldd "$bin" >&2
  exit 1
fi
# exec directly (no shell), with nothing in the environment, as the image runs it.
version=$(env -i "$bin" version)
echo "build-static: $bin is static ($(stat -c %s "$bin") bytes) and runs: $version"
