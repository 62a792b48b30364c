#!/usr/bin/env bash
# Fuzzes the parsers of untrusted webhook input (fuzz/fuzz_targets/*.rs) with cargo-fuzz/libFuzzer.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]      default: 60 seconds, every target
#
# Each target starts from its committed seeds in fuzz/corpus/<target>/ (read-only here: what the
# run discovers goes to a temporary directory that is removed afterwards) and runs with a 5 s
# per-input timeout and a 512 MB memory limit. The first crash, timeout or out-of-memory stops the
# script with a non-zero exit; the input is kept in fuzz/artifacts/<target>/ and the command that
# replays it is printed last. The checks themselves live in fuzz/checks/; `cargo test` (tests/api/
# fuzz_corpus.rs) runs them on every committed corpus file, so a crash input copied into the
# corpus stays a regression test without a fuzzing build.
#
# Needs a nightly toolchain (rustup toolchain install nightly); installs cargo-fuzz if missing.
# FUZZ_TARGET_DIR=DIR builds somewhere other than fuzz/target (e.g. a directory kept between CI
# runs, since a cold build of the instrumented crate and its dependencies takes several minutes).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-60}"
shift $(($# > 0 ? 1 : 0))
if ! [[ "$seconds" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]" >&2
  exit 2
fi

log() { printf '\n== %s\n' "$*"; }

if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "scripts/fuzz.sh: a nightly toolchain is needed: rustup toolchain install nightly" >&2
  exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  log "installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

# The main crate forbids unsafe code, and the properties checked are panics, hangs and memory
# growth, which libFuzzer catches by itself; without AddressSanitizer the build is shorter and
# every target runs about three times as many inputs.
build_flags=(--sanitizer none)
if [[ -n "${FUZZ_TARGET_DIR:-}" ]]; then
  build_flags+=(--target-dir "$FUZZ_TARGET_DIR")
fi

if (($# > 0)); then
  targets=("$@")
else
  mapfile -t targets < <(cargo +nightly fuzz list)
fi

log "building ${targets[*]}"
build_started=$SECONDS
cargo +nightly fuzz build "${build_flags[@]}"
echo "built in $((SECONDS - build_started)) s"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
summary=()
for target in "${targets[@]}"; do
  seeds="fuzz/corpus/$target"
  if [[ ! -d "$seeds" ]]; then
    echo "scripts/fuzz.sh: no seed corpus $seeds" >&2
    exit 2
  fi
  mkdir -p "$work/$target"
  log "fuzzing $target for $seconds s"
  # libFuzzer writes new inputs to the first directory and only reads the others.
  if ! cargo +nightly fuzz run "${build_flags[@]}" "$target" "$work/$target" "$seeds" -- \
    -max_total_time="$seconds" -timeout=5 -rss_limit_mb=512 -print_final_stats=1 \
    2>&1 | tee "$work/$target.log"; then
    artifact="$(ls -t "fuzz/artifacts/$target"/* 2>/dev/null | head -1 || true)"
    log "$target FAILED on ${artifact:-an input that was not saved}"
    echo "replay: cargo +nightly fuzz run ${build_flags[*]} $target ${artifact:-}"
    echo "once fixed, copy the input into $seeds/: cargo test replays every corpus file"
    exit 1
  fi
  runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/$target.log" | tail -1)"
  summary+=("$(printf '%-18s %10s executions, %s new corpus inputs' "$target" "${runs:-?}" \
    "$(find "$work/$target" -type f | wc -l)")")
done

log "no crash in ${#targets[@]} targets, $seconds s each"
printf '%s\n' "${summary[@]}"
