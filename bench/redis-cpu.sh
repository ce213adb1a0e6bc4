#!/usr/bin/env bash
# Server CPU per operation under redis-benchmark, for kcache-node binaries and Redis
# side by side (each target in turn, ROUNDS rounds), pinned as bench/run.sh pins:
# server on core 0, redis-benchmark on core 1; 50 connections, 100,000 keys of 100
# bytes, GET (after 200,000 random SETs, which leave about 86% of the keys set, so
# about 14% of the GETs miss on every server) and SET, with -P 16 and without.
#
#   bench/redis-cpu.sh [target/release/kcache-node | /tmp/old/kcache-node | redis]...
#
# Compares builds of the node in one run (copy the old binary aside first); prints
# one line per target and test. Not in CI: timings belong to an idle machine.
set -euo pipefail
ROUNDS=${ROUNDS:-3}
N=${N:-2000000}
PORT=17379
TCK=$(getconf CLK_TCK)
[[ $# -gt 0 ]] || set -- target/release/kcache-node redis
cpu() { awk '{print $14+$15}' "/proc/$1/stat"; }
redis-server --version
for round in $(seq "$ROUNDS"); do
  for target in "$@"; do
    for pipeline in 16 1; do
      for test in get set; do
        if [[ $target == redis ]]; then
          taskset -c 0 redis-server --port $PORT --save "" --appendonly no >/dev/null 2>&1 &
        else
          taskset -c 0 "$target" --grpc-addr 127.0.0.1:17300 --admin-addr 127.0.0.1:17301 \
            --redis-addr 127.0.0.1:$PORT --max-memory 256MiB --log warn >/dev/null 2>&1 &
        fi
        pid=$!
        for _ in $(seq 100); do redis-cli -p $PORT ping >/dev/null 2>&1 && break; sleep 0.1; done
        n=$N; [[ $pipeline == 1 ]] && n=$((N / 8))
        if [[ $test == get ]]; then
          taskset -c 1 redis-benchmark -p $PORT -c 50 -r 100000 -d 100 -n 200000 -P 16 -t set -q >/dev/null
        fi
        before=$(cpu $pid)
        result=$(taskset -c 1 redis-benchmark -p $PORT -c 50 -r 100000 -d 100 -n $n \
          -P $pipeline -t $test -q | tr '\r' '\n' | grep "requests per second" | tail -1)
        after=$(cpu $pid)
        per_op=$(python3 -c "print(f'{($after - $before) / $TCK / $n * 1e6:.2f}')")
        echo "round $round  $target  -P $pipeline  $test: server CPU ${per_op} us/op; $result"
        kill $pid; wait $pid 2>/dev/null || true
      done
    done
  done
done
