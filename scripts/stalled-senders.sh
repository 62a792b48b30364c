#!/usr/bin/env bash
# Resident memory of the service under stalled, unauthenticated senders (README, Security): 200
# and 1,000 connections that each send all but the last byte of a 1 MiB HubSpot body, then stall,
# once unsigned and once with well-formed forged signature headers. ~5 minutes after the release
# build. Prints one JSON line per run.
#   scripts/stalled-senders.sh
#   STALL_BINARY=/path/to/another/referral-sync scripts/stalled-senders.sh   # e.g. an older release
set -euo pipefail
cd "$(dirname "$0")/.."
# Each attacker and its server side take a file descriptor.
ulimit -n 8192 2>/dev/null || true
cargo bench --bench stalled
