#!/usr/bin/env bash
# Calibrate `bench gate` on this machine (docs/gating.md, "Run against run on the H100"): the
# suite measured twice with the same code (A, B), then once more with FRACTION extra work
# injected into one implementation (S, FLASHSUITE_TEST_SLOWDOWN). The gate of B against A should
# pass and the gate of S against A should fail; each gate's cases are in DIR/*.json and *.md.
#   ci/gate-self-test.sh SUITE [TIER] [TECHNIQUE/IMPL] [FRACTION]
#   ci/gate-self-test.sh attention quick attention/triton 0.10      # the defaults for attention
# Exit 0 when both gates did as expected, 1 when one did not, 2 on bad input. A run already
# finished in DIR is kept, so a runner that stops commands at a time limit can call it again.
set -uo pipefail
[[ $# -ge 1 ]] || { echo "usage: $0 SUITE [TIER] [TECHNIQUE/IMPL] [FRACTION]" >&2; exit 2; }
suite=$1
tier=${2:-quick}
target=${3:-$suite/triton}
fraction=${4:-0.10}
dir=${GATE_SELF_TEST_DIR:-gate-self-test}
[[ $target == */* ]] || { echo "error: TECHNIQUE/IMPL expected, got '$target'" >&2; exit 2; }
impl=${target#*/}

measure() {  # measure NAME [bench run options...]: a run into DIR/NAME; a failed row (exit 1) is the gate's to judge
    local name=$1 rc=0
    shift
    if [[ -n $(find "$dir/$name" -name '*.parquet' 2> /dev/null) ]]; then
        echo "$dir/$name: kept (a finished run is there)"
        return
    fi
    rm -rf "${dir:?}/$name"
    bench run "$suite" --tier "$tier" --results "$dir/$name" "$@" || rc=$?
    (( rc < 2 )) || { echo "error: bench run $suite failed (exit $rc)" >&2; exit 2; }
}

measure a
measure b
FLASHSUITE_TEST_SLOWDOWN="$target=$fraction" measure s --impl "$impl"

same=0
bench gate --baseline "$dir/a" --candidate "$dir/b" --json "$dir/same.json" --summary "$dir/same.md" || same=$?
slowed=0
FLASHSUITE_TEST_SLOWDOWN="$target=$fraction" bench gate --baseline "$dir/a" --candidate "$dir/s" \
    --json "$dir/slowed.json" --summary "$dir/slowed.md" || slowed=$?
echo "the same code twice: exit $same (expected 0); $target slowed by $fraction: exit $slowed (expected 1)"
(( same == 0 && slowed == 1 ))
