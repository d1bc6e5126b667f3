#!/usr/bin/env bash
# Run a suite on a GPU machine that has this checkout's files but not its git history (a copy
# made by a device tool, an rsync'd box): the revision is passed in so the table records it.
# The tables in results/ were made this way:
#   ci/run-on-gpu.sh "$(git rev-parse --short=12 HEAD)" attention --tier full
# Needs torch, triton, pandas, pyarrow, rich and nvidia-ml-py on the machine; installs nothing.
set -euo pipefail
[[ $# -ge 2 ]] || { echo "usage: $0 GIT_SHA SUITE [bench run options...]" >&2; exit 2; }
sha=$1
shift
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" FLASHSUITE_GIT_SHA="$sha" FLASHSUITE_GIT_DIRTY=0
python3 -m harness.cli env
python3 -m harness.cli run "$@"
