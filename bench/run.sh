#!/usr/bin/env bash
# kcache side by side with Redis and memcached: installs and starts both (127.0.0.1
# only, the same memory limit as the kcache node), drives all three with `kcache bench`,
# and writes results.md, results.json and latency.png under bench/results/.
#
#   bench/run.sh            the full run (about 10 minutes on 2 cores)
#   bench/run.sh --smoke    seconds long, tiny data; CI runs this (never asserts timing)
#
# Env: OUT (results folder), DURATION (per measurement, default 8s), MEMORY (MiB limit
# of every server in the throughput figures, default 64), FIGURES=tls (only figure 7,
# the cost of TLS: about a minute), FIGURES=redis (figures 1-3, the Redis port beside
# gRPC, and 8, redis-benchmark: about seven minutes), HALF_ROUNDS (rounds of the GET
# runs at half of peak, whose median p99 the report takes: default 3, 2 in --smoke).
# On a machine with 2+ cores the servers share core 0 and the load generator gets
# core 1 (taskset), the same for all three systems, so neither side starves the other.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

smoke=0
[[ "${1:-}" == "--smoke" ]] && smoke=1

if [[ $smoke == 1 ]]; then
  OUT=${OUT:-$(mktemp -d)}
  DURATION=${DURATION:-1s}
  KEYS=2000; MEM_ITEMS=20000; HIT_KEYS=20000; HIT_MEMORY=4; HIT_REQUESTS=20000
elif [[ ${FIGURES:-all} == tls ]]; then
  # Not bench/results itself: its report holds every figure.
  OUT=${OUT:-$ROOT/bench/results/tls}
  DURATION=${DURATION:-8s}
  KEYS=100000; MEM_ITEMS=0; HIT_KEYS=0; HIT_MEMORY=32; HIT_REQUESTS=0
elif [[ ${FIGURES:-all} == redis ]]; then
  OUT=${OUT:-$ROOT/bench/results/redis}
  DURATION=${DURATION:-8s}
  KEYS=100000; MEM_ITEMS=0; HIT_KEYS=0; HIT_MEMORY=32; HIT_REQUESTS=0
else
  OUT=${OUT:-$ROOT/bench/results}
  DURATION=${DURATION:-8s}
  KEYS=100000; MEM_ITEMS=1000000; HIT_KEYS=2000000; HIT_MEMORY=32; HIT_REQUESTS=2000000
fi
MEMORY=${MEMORY:-64}
FIGURES=${FIGURES:-all}
if [[ $smoke == 1 ]]; then HALF_ROUNDS=${HALF_ROUNDS:-2}; else HALF_ROUNDS=${HALF_ROUNDS:-3}; fi
# Generous hard bound on any one benchmark process; a healthy run never gets near it.
BOUND=300
mkdir -p "$OUT"
RUNS=$OUT/runs.jsonl
: > "$RUNS"

# --- what we need --------------------------------------------------------------------
if ! command -v redis-server >/dev/null || ! command -v memcached >/dev/null; then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    apt-get update -qq >/dev/null || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server memcached >/dev/null || true
  fi
fi
have_redis=0; have_memcached=0
command -v redis-server >/dev/null && have_redis=1
command -v memcached >/dev/null && have_memcached=1
if ! command -v openssl >/dev/null && [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl >/dev/null || true
fi
have_openssl=0
command -v openssl >/dev/null && have_openssl=1
if [[ $smoke == 0 && $FIGURES == all && ($have_redis == 0 || $have_memcached == 0) ]]; then
  echo "redis-server and memcached are needed (apt-get install redis-server memcached)" >&2
  exit 1
fi

# The smoke run reuses the debug build `cargo test` has just made; figures need release.
if [[ $smoke == 1 ]]; then
  cargo build --quiet -p kcache-cli -p kcache-node
  BIN=${CARGO_TARGET_DIR:-$ROOT/target}/debug
else
  cargo build --release --quiet -p kcache-cli -p kcache-node
  BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
fi
KCACHE=$BIN/kcache
NODE=$BIN/kcache-node

if [[ $(nproc) -ge 2 ]] && command -v taskset >/dev/null; then
  SERVER_CPU=(taskset -c 0); CLIENT_CPU=(taskset -c 1)
else
  SERVER_CPU=(); CLIENT_CPU=()
fi

# --- servers -------------------------------------------------------------------------
REDIS_ADDR=127.0.0.1:16379
MEMCACHED_ADDR=127.0.0.1:21211
KCACHE_ADDR=127.0.0.1:17100
# The same node's Redis-protocol port.
KCACHE_RESP_ADDR=127.0.0.1:17102
PIDS=()
stop_all() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  PIDS=()
}
trap stop_all EXIT

wait_port() { # host port
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on $1:$2" >&2
  return 1
}

start_kcache() { # MiB [node flags...]
  local mib=$1; shift
  "${SERVER_CPU[@]}" "$NODE" --grpc-addr $KCACHE_ADDR --admin-addr 127.0.0.1:17101 \
    --redis-addr $KCACHE_RESP_ADDR --max-memory "${mib}MiB" --log warn "$@" >"$OUT/kcache.log" 2>&1 &
  PIDS+=($!); SERVER=$!
  wait_port 127.0.0.1 17100
}
start_redis() { # MiB policy
  "${SERVER_CPU[@]}" redis-server --bind 127.0.0.1 --port 16379 --save '' --appendonly no \
    --maxmemory "${1}mb" --maxmemory-policy "$2" --protected-mode yes \
    >"$OUT/redis.log" 2>&1 &
  PIDS+=($!); SERVER=$!
  wait_port 127.0.0.1 16379
}
start_memcached() { # MiB
  # -t 1: one worker thread, like Redis's one event loop, on the same one core.
  "${SERVER_CPU[@]}" memcached -l 127.0.0.1 -p 21211 -U 0 -m "$1" -t 1 -u "$(id -un)" \
    >"$OUT/memcached.log" 2>&1 &
  PIDS+=($!); SERVER=$!
  wait_port 127.0.0.1 21211
}
start() { # system MiB [redis policy]
  case $1 in
    kcache) start_kcache "$2" ;;
    redis) start_redis "$2" "${3:-allkeys-lru}" ;;
    memcached) start_memcached "$2" ;;
  esac
}
addr_of() {
  case $1 in kcache) echo $KCACHE_ADDR ;; redis) echo $REDIS_ADDR ;; memcached) echo $MEMCACHED_ADDR ;; esac
}
# The fastest way to fill each system: its own batched path.
loader_of() {
  case $1 in kcache) echo kcache-pipeline ;; *) echo "$1" ;; esac
}

# CPU seconds (user + system) a process has used; with the ops a run did, this gives
# the CPU each operation costs, which other load on the machine skews far less than
# throughput. Clock ticks are 100 per second on Linux.
cpu_s() { awk '{printf "%.2f", ($14 + $15) / 100}' "/proc/$1/stat"; }
bench() { # label target servers [bench args...]
  local label=$1 target=$2 servers=$3; shift 3
  echo "-- $label" >&2
  # The server is the label's system (get/kcache-resp: kcache's node), else the target's.
  local system=${label#*/}; system=${system%%#*}  # half/kcache-resp#2: kcache-resp
  local server=${SERVER_OF[$system]:-${SERVER_OF[$target]:-}}
  local before=""; [[ -n $server ]] && before=$(cpu_s "$server")
  timeout $BOUND "${CLIENT_CPU[@]}" "$KCACHE" bench --json --label "$label" \
    --target "$target" --servers "$servers" "$@" >>"$RUNS"
  if [[ -n $before ]]; then
    echo "{\"label\": \"server-cpu/$label\", \"cpu_s\": $(python3 -c "print($(cpu_s "$server") - $before)")}" >>"$RUNS"
  fi
}
declare -A SERVER_OF=()
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
load_average() { cut -d' ' -f1 /proc/loadavg; }

systems=(kcache)
[[ $have_redis == 1 ]] && systems+=(redis)
[[ $have_memcached == 1 ]] && systems+=(memcached)
echo "systems: ${systems[*]}; results in $OUT" >&2
# Other work on the machine skews every figure; the report shows how busy it was.
echo "{\"label\": \"load-average/start\", \"value\": $(load_average)}" >>"$RUNS"

# --- 7: the cost of TLS --------------------------------------------------------------
# One kcache node at a time, plaintext, then TLS, then mutual TLS with a token, each
# loaded and measured alike (unary GETs over 50 connections; GETs on 50 Pipeline
# streams of depth 16), so the report gives TLS's throughput and server CPU per
# operation as ratios to plaintext in the same run. Certificates: a throwaway CA made
# here with openssl (ECDSA P-256, what cert-manager issues by default).
tls_figure() {
  local dir=$OUT/tls
  rm -rf "$dir"; mkdir -p "$dir"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
    -subj /CN=kcache-bench-ca -addext basicConstraints=critical,CA:TRUE \
    -addext keyUsage=critical,keyCertSign,cRLSign -keyout "$dir/ca.key" -out "$dir/ca.crt" 2>/dev/null
  for name in tls client; do
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=kcache-$name" \
      -keyout "$dir/$name.key" -out "$dir/$name.csr" 2>/dev/null
    openssl x509 -req -in "$dir/$name.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial \
      -days 1 -out "$dir/$name.crt" \
      -extfile <(printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n') 2>/dev/null
  done
  head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$dir/token"
  local server_tls=(--tls-cert-file "$dir/tls.crt" --tls-key-file "$dir/tls.key")
  local client_tls=(--tls-ca-file "$dir/ca.crt")
  for mode in plain tls mtls-token; do
    local node_flags=() client_flags=()
    case $mode in
      tls) node_flags=("${server_tls[@]}"); client_flags=("${client_tls[@]}") ;;
      mtls-token)
        node_flags=("${server_tls[@]}" --tls-client-ca-file "$dir/ca.crt" --auth-token-file "$dir/token")
        client_flags=("${client_tls[@]}" --tls-cert-file "$dir/client.crt" --tls-key-file "$dir/client.key"
          --token-file "$dir/token") ;;
    esac
    start_kcache "$MEMORY" "${node_flags[@]}"
    SERVER_OF[kcache]=$SERVER; SERVER_OF[kcache-pipeline]=$SERVER
    bench "tls-load/$mode" kcache-pipeline "$KCACHE_ADDR" --workload load --keys $KEYS --depth 16 "${client_flags[@]}"
    bench "tls/$mode/get" kcache "$KCACHE_ADDR" --workload get --keys $KEYS --duration "$DURATION" "${client_flags[@]}"
    bench "tls/$mode/pipeline" kcache-pipeline "$KCACHE_ADDR" --workload get --keys $KEYS --depth 16 \
      --duration "$DURATION" "${client_flags[@]}"
    stop_all
  done
  SERVER_OF=()
}
if [[ $FIGURES == redis ]]; then
  :
elif [[ $have_openssl == 1 ]]; then
  tls_figure
else
  echo "openssl not found: no TLS figure" >&2
fi
if [[ $FIGURES == tls ]]; then
  systems=()
fi

# --- 1-3: throughput and latency at a fixed memory limit -----------------------------
# All three servers run at once (idle ones cost nothing) and every figure measures the
# systems back to back, so whatever else the machine does hits all of them alike.
for sys in "${systems[@]}"; do
  start "$sys" "$MEMORY"
  if [[ $sys == kcache ]]; then
    SERVER_OF[kcache]=$SERVER; SERVER_OF[kcache-multi]=$SERVER; SERVER_OF[kcache-pipeline]=$SERVER
    SERVER_OF[kcache-resp]=$SERVER
  else
    SERVER_OF[$sys]=$SERVER
  fi
  bench "load/$sys" "$(loader_of "$sys")" "$(addr_of "$sys")" --workload load --keys $KEYS --depth 16
done
# kcache-resp: the kcache node through its Redis port, driven exactly as Redis is.
resp_systems=()
[[ " ${systems[*]} " == *" kcache "* ]] && resp_systems=(kcache-resp)
resp_systems+=("${systems[@]}")
resp_target() { case $1 in kcache-resp) echo redis ;; *) echo "$1" ;; esac; }
resp_addr() { case $1 in kcache-resp) echo $KCACHE_RESP_ADDR ;; *) addr_of "$1" ;; esac; }
for op in get set; do
  for sys in "${resp_systems[@]}"; do
    bench "$op/$sys" "$(resp_target "$sys")" "$(resp_addr "$sys")" --workload $op --keys $KEYS --duration "$DURATION"
  done
done
# The tail at half of peak swings run to run (Redis's own p99 went from 11 to 28 ms in
# three runs by hand: the open-loop generator shares its core with nothing but its own
# timer), so HALF_ROUNDS rounds, the systems interleaved in each, and the report takes
# each system's median p99. Round 1 is labelled half/<system>, the others half/<system>#<n>.
for round in $(seq "$HALF_ROUNDS"); do
  for sys in "${resp_systems[@]}"; do
    peak=$(grep -F "\"label\":\"get/$sys\"" "$RUNS" | python3 -c 'import json,sys; print(json.load(sys.stdin)["ops_per_s"])')
    label="half/$sys"; (( round > 1 )) && label+="#$round"
    bench "$label" "$(resp_target "$sys")" "$(resp_addr "$sys")" --workload get --keys $KEYS --duration "$DURATION" \
      --rate "$(python3 -c "print(max(1.0, $peak / 2))")"
  done
done
for sys in "${systems[@]}"; do
  if [[ $sys == kcache ]]; then
    bench "batch/kcache-multi" kcache-multi "$KCACHE_ADDR" --workload get --keys $KEYS --depth 16 --duration "$DURATION"
    bench "batch/kcache-pipeline" kcache-pipeline "$KCACHE_ADDR" --workload get --keys $KEYS --depth 16 --duration "$DURATION"
    bench "batch/kcache-resp" redis "$KCACHE_RESP_ADDR" --workload get --keys $KEYS --depth 16 --duration "$DURATION"
  else
    bench "batch/$sys" "$sys" "$(addr_of "$sys")" --workload get --keys $KEYS --depth 16 --duration "$DURATION"
  fi
done
stop_all
SERVER_OF=()

# --- 8: redis-benchmark, Redis's own load generator, on kcache's Redis port and Redis ---
# 50 connections, 100-byte values over $KEYS keys, SET then GET, without and with -P 16;
# one test per invocation so each has its own server CPU figure. Bounded by -n.
if command -v redis-benchmark >/dev/null && [[ $have_redis == 1 && $FIGURES != tls ]]; then
  if [[ $smoke == 1 ]]; then RB_N=2000; RB_NP=20000; else RB_N=${RB_N:-600000}; RB_NP=${RB_NP:-3000000}; fi
  start kcache "$MEMORY"; kcache_pid=$SERVER
  start redis "$MEMORY"; redis_pid=$SERVER
  for pipeline in 1 16; do
    n=$RB_N; [[ $pipeline == 16 ]] && n=$RB_NP
    for test in set get; do
      for sys in kcache-resp redis; do
        if [[ $sys == redis ]]; then port=16379; pid=$redis_pid; else port=${KCACHE_RESP_ADDR#*:}; pid=$kcache_pid; fi
        label="redis-benchmark/$sys/$test/P$pipeline"
        echo "-- $label" >&2
        before=$(cpu_s "$pid")
        csv=$(timeout $BOUND "${CLIENT_CPU[@]}" redis-benchmark -h 127.0.0.1 -p "$port" -c 50 \
          -n "$n" -r "$KEYS" -d 100 -P "$pipeline" -t "$test" --csv)
        after=$(cpu_s "$pid")
        python3 - "$label" "$before" "$after" "$n" "$csv" >>"$RUNS" <<'PY'
import csv, io, json, sys
label, before, after, n, text = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
rows = list(csv.DictReader(io.StringIO(text)))
row = rows[-1]
print(json.dumps({"label": label, "ops": n, "ops_per_s": float(row["rps"]),
                  "p50_ms": float(row["p50_latency_ms"]), "p99_ms": float(row["p99_latency_ms"]),
                  "server_us_per_op": (after - before) / n * 1e6}))
PY
      done
    done
  done
  stop_all
fi
if [[ $FIGURES == redis ]]; then
  systems=()
fi

# --- 4: memory per item --------------------------------------------------------------
# A limit far above what the items need, so nothing is evicted.
for sys in "${systems[@]}"; do
  start "$sys" 4096
  before=$(rss_kib "$SERVER")
  bench "memory/$sys" "$(loader_of "$sys")" "$(addr_of "$sys")" --workload load --keys $MEM_ITEMS --depth 16
  after=$(rss_kib "$SERVER")
  echo "{\"label\": \"rss/$sys\", \"items\": $MEM_ITEMS, \"rss_before_kib\": $before, \"rss_after_kib\": $after}" >>"$RUNS"
  stop_all
done

# --- 5: hit ratio at equal memory ----------------------------------------------------
hit_systems=()
for sys in "${systems[@]}"; do
  if [[ $sys == redis ]]; then hit_systems+=(redis:allkeys-lru redis:allkeys-lfu); else hit_systems+=("$sys"); fi
done
for entry in "${hit_systems[@]}"; do
  sys=${entry%%:*}; policy=${entry#*:}
  start "$sys" $HIT_MEMORY "$policy"
  name=$sys; [[ $sys == redis ]] && name="redis-${policy#allkeys-}"
  bench "hit/$name" "$(loader_of "$sys")" "$(addr_of "$sys")" --workload cache-aside \
    --keys $HIT_KEYS --dist zipf:0.99 --requests $HIT_REQUESTS --duration 600s --depth 16 --seed 7
  stop_all
done

# --- 6: a 3-node cluster -------------------------------------------------------------
peers=n1=127.0.0.2:17100,n2=127.0.0.3:17100,n3=127.0.0.4:17100
cluster=127.0.0.2:17100,127.0.0.3:17100,127.0.0.4:17100
replications=(1 2)
[[ $FIGURES != all ]] && replications=()
for r in "${replications[@]}"; do
  for i in 1 2 3; do
    ip=127.0.0.$((i + 1))
    "${SERVER_CPU[@]}" "$NODE" --node-id "n$i" --grpc-addr "$ip:17100" --admin-addr "$ip:17101" \
      --discovery static --peers $peers --replication-factor $r --max-memory "${MEMORY}MiB" \
      --drain-timeout 1s \
      --log warn >"$OUT/cluster-n$i.log" 2>&1 &
    PIDS+=($!)
  done
  for i in 1 2 3; do wait_port "127.0.0.$((i + 1))" 17100; done
  sleep 1 # let the members see each other before the load
  bench "cluster-load/r$r" kcache-pipeline $cluster --workload load --keys $KEYS --depth 16
  for mode in rr smart; do
    flag=(); [[ $mode == smart ]] && flag=(--smart)
    for op in get set; do
      echo "-- cluster/r$r/$mode/$op" >&2
      timeout $BOUND "${CLIENT_CPU[@]}" "$KCACHE" "${flag[@]}" bench --json \
        --label "cluster/r$r/$mode/$op" --target kcache --servers $cluster \
        --workload $op --keys $KEYS --duration "$DURATION" >>"$RUNS"
    done
  done
  stop_all
done

echo "{\"label\": \"load-average/end\", \"value\": $(load_average)}" >>"$RUNS"

# --- the report ----------------------------------------------------------------------
PY=python3
[[ -x $ROOT/.venv/bin/python ]] && PY=$ROOT/.venv/bin/python
if [[ $smoke == 0 ]]; then
  "$PY" -m pip install --quiet --disable-pip-version-check -r bench/requirements.txt || true
fi
"$PY" bench/report.py "$RUNS" "$OUT" --cores "$(nproc)" --memory "$MEMORY" --hit-memory "$HIT_MEMORY"
echo "wrote $OUT/results.md, $OUT/results.json$([[ -f $OUT/latency.png ]] && echo ", $OUT/latency.png")" >&2
