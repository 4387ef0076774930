#!/bin/bash
# OpenMP threads spinning (the default) or waiting passively, on the tiny pipeline: idle, then beside one busy
# process. Writes one line per run to $OUT/summary (record: docs/tuning/omp-wait-policy.json). Run from the repository.
set -u
OUT=${OUT:-/tmp/omp}; mkdir -p "$OUT"
run() {  # $1: label, $2: policy (default | passive)
  rm -rf "$OUT/home" "$OUT/out"
  if [ "$2" = passive ]; then export OMP_WAIT_POLICY=PASSIVE; else unset OMP_WAIT_POLICY; fi
  load=$(cut -d' ' -f1 /proc/loadavg)
  KD_TUTORIAL_HOME="$OUT/home" timeout 420 python -m kd_tutorial.cli distill --profile tiny --quiet --out "$OUT/out" \
    > "$OUT/log_$1_$2" 2>&1
  echo "$1 (load at start $load) $2 rc=$? $(python -c "import json; r = json.load(open('$OUT/out/results.json'))['run']
print(r['wall_seconds'], r['phase_seconds'])")" >> "$OUT/summary"
}
for rep in 1 2; do for policy in default passive; do run "idle-$rep" $policy; done; done
python3 -c "while 1: pass" & busy=$!
sleep 20
for policy in default passive; do run busy $policy; done
kill $busy
