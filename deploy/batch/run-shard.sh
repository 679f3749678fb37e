#!/bin/sh
# One shard of the batch Job (runs in every pod of the Indexed Job).
# Takes lines i, i+N, i+2N, ... of FILE_LIST (i = JOB_COMPLETION_INDEX, set by
# Kubernetes; N = NUM_SHARDS = the Job's completions), transcribes them with
# `stt-client batch` against STT_TARGET and writes RESULTS_DIR/part-<i>.jsonl.
# The result appears atomically (written to .tmp, then renamed), so a retried
# pod either finds it complete and exits, or resumes the shard: `stt-client
# batch` appends one fsync'ed line per file to the .tmp and skips the files
# already in it (a line torn by a kill is cut off), so nothing is lost or
# duplicated. It retries UNAVAILABLE/RESOURCE_EXHAUSTED/DEADLINE_EXCEEDED with
# backoff, so server rollouts do not fail the shard; it exits 1 if a file
# still failed (reasons in the log), and the pod's retry tries those again.
set -eu

: "${JOB_COMPLETION_INDEX:?set by Kubernetes in an Indexed Job}"
: "${NUM_SHARDS:?must equal the Job spec.completions}"
: "${STT_TARGET:?gRPC target of the stt service}"
FILE_LIST="${FILE_LIST:-/data/input/files.txt}"
RESULTS_DIR="${RESULTS_DIR:-/data/results}"

index="$JOB_COMPLETION_INDEX"
final="$RESULTS_DIR/part-$(printf '%05d' "$index").jsonl"
if [ -f "$final" ]; then
    echo "shard $index/$NUM_SHARDS: $final already exists, nothing to do"
    exit 0
fi

shard="${TMPDIR:-/tmp}/shard-$index.txt"
# Skip blank lines and comments; the modulo is on the line number, so a shard
# is stable whatever the other pods do.
awk -v n="$NUM_SHARDS" -v i="$index" \
    '(NR - 1) % n == i && NF && $0 !~ /^#/' "$FILE_LIST" > "$shard"
mkdir -p "$RESULTS_DIR"
echo "shard $index/$NUM_SHARDS: $(wc -l < "$shard") files -> $final"

stt-client batch --target "$STT_TARGET" --files-from "$shard" --output "$final.tmp" \
    --jobs "${BATCH_JOBS:-4}"
mv "$final.tmp" "$final"
