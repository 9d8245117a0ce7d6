#!/bin/sh
# fuzz/run.sh - the fuzz campaign behind `make fuzz`: build every cargo-fuzz
# target (fuzz/fuzz_targets, nightly, sanitizers), then run each one for
# FUZZ_SECONDS from its seeds (fuzz/seeds/<target>) and past crashes
# (fuzz/regressions/<target>), growing a scratch corpus in
# fuzz/corpus/<target> (git-ignored). Exits 1 when any target crashed,
# ran out of memory or hung, after naming the input to keep; 0 with
# "fuzz: skipped: <reason>" when nightly Rust or cargo-fuzz is missing.
#
#   FUZZ_SECONDS=60 FUZZ_TARGETS="qcow2 vhd" sh fuzz/run.sh
set -u
cd "$(dirname "$0")/.." || exit 2
seconds=${FUZZ_SECONDS:-60}
case $seconds in '' | *[!0-9]*) echo "fuzz: FUZZ_SECONDS must be a whole number of seconds" >&2; exit 2 ;; esac
# Nightly through rustup (cargo-fuzz needs -Z flags and sanitizers).
cargo="rustup run nightly cargo"

if ! command -v rustup >/dev/null 2>&1; then
    echo "fuzz: skipped: no rustup, so no nightly Rust (see https://rustup.rs)"
    exit 0
fi
if ! out=$(rustup run nightly rustc --version 2>&1); then
    echo "fuzz: skipped: no nightly Rust ('rustup run nightly rustc --version': $(echo "$out" | head -n 1)); install it with 'rustup toolchain install nightly'"
    exit 0
fi
if ! out=$($cargo fuzz --version 2>&1); then
    echo "fuzz: skipped: cargo-fuzz not found ($(echo "$out" | head -n 1)); install it with 'cargo install cargo-fuzz --locked'"
    exit 0
fi

targets=${FUZZ_TARGETS:-$(ls fuzz/fuzz_targets | sed -n 's/\.rs$//p')}
echo "fuzz: $($cargo fuzz --version), $(rustup run nightly rustc --version)"
start=$(date +%s)
# Sanitizer builds (release, debug assertions, ASan) go to fuzz/target.
if ! (cd fuzz && $cargo fuzz build); then
    echo "fuzz: the fuzz targets do not build" >&2
    exit 2
fi
echo "fuzz: built $(echo $targets | wc -w) targets in $(($(date +%s) - start)) s"

logs=fuzz/target/logs
mkdir -p "$logs"
failed=""
for t in $targets; do
    [ -d "fuzz/seeds/$t" ] || { echo "fuzz: $t: no fuzz/seeds/$t" >&2; failed="$failed $t"; continue; }
    mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
    dirs="fuzz/corpus/$t fuzz/seeds/$t"
    [ -d "fuzz/regressions/$t" ] && dirs="$dirs fuzz/regressions/$t"
    # Inputs up to the largest seed (the compact VHDX is 1.06 MiB, above
    # libFuzzer's 1 MiB default ceiling), and at least 4 KiB.
    max_len=$(find -L $dirs -type f -printf '%s\n' 2>/dev/null | sort -n | tail -n 1)
    [ "${max_len:-0}" -ge 4096 ] || max_len=4096
    # The path-taking targets write their input under TMPDIR; a crash
    # leaves it behind, so each run gets its own, removed afterwards.
    scratch=fuzz/target/tmp/$t
    rm -rf "$scratch" && mkdir -p "$scratch"
    before=$(ls "fuzz/artifacts/$t" | wc -l)
    t0=$(date +%s)
    # -fork is not used: one process, so a crash stops the target at once.
    TMPDIR=$(pwd)/$scratch $cargo fuzz run "$t" $dirs -- \
        -max_total_time="$seconds" -rss_limit_mb=1024 -malloc_limit_mb=256 -timeout=10 \
        -max_len="$max_len" -print_final_stats=1 >"$logs/$t.log" 2>&1
    status=$?
    rm -rf "$scratch"
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$logs/$t.log" | tail -n 1)
    cov=$(grep -o 'cov: [0-9]*' "$logs/$t.log" | tail -n 1)
    corpus=$(ls "fuzz/corpus/$t" | wc -l)
    if [ $status -eq 0 ]; then
        echo "fuzz: $t: ok, $(($(date +%s) - t0)) s, ${runs:-?} runs, ${cov:-cov: ?}, corpus $corpus"
        continue
    fi
    failed="$failed $t"
    echo "fuzz: $t: FAILED (exit $status) after $(($(date +%s) - t0)) s; the end of $logs/$t.log:" >&2
    # (libfuzzer-sys prints the whole input on one line: cut it short)
    tail -n 60 "$logs/$t.log" | cut -c 1-300 >&2
    if [ "$(ls "fuzz/artifacts/$t" | wc -l)" -gt "$before" ]; then
        for a in $(ls -t "fuzz/artifacts/$t" | head -n 1); do
            echo "fuzz: $t: the input is fuzz/artifacts/$t/$a" >&2
            echo "fuzz:   reproduce: (cd fuzz && cargo +nightly fuzz run $t artifacts/$t/$a)" >&2
            echo "fuzz:   minimize:  (cd fuzz && cargo +nightly fuzz tmin $t artifacts/$t/$a)" >&2
            echo "fuzz:   then fix the parser and keep the input as a regression test:" >&2
            echo "fuzz:   cp fuzz/artifacts/$t/$a fuzz/regressions/$t/<what-it-is>  (replayed by make test)" >&2
        done
    fi
done
echo "fuzz: $(echo $targets | wc -w) targets, ${seconds} s each, $(($(date +%s) - start)) s in all"
if [ -n "$failed" ]; then
    echo "fuzz: FAILED:$failed" >&2
    exit 1
fi
