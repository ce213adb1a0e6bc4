#!/usr/bin/env bash
# h2spec (HTTP/2 conformance, pinned in e2e/h2spec/go.mod) against a kcache-node's gRPC
# port. Every failure must be one listed below with the reason hyper/h2 or gRPC answers
# differently from what the h2spec case expects; anything else fails the check.
#
#   scripts/checks/h2spec.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

h2spec="$(e2e/h2spec/build.sh)"
cargo build --quiet --locked -p kcache-node
node_bin=target/debug/kcache-node

work="$(mktemp -d)"
node_pid=
cleanup() {
  [[ -n "$node_pid" ]] && kill "$node_pid" 2>/dev/null && wait "$node_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

"$node_bin" --grpc-addr 127.0.0.1:0 --admin-addr 127.0.0.1:0 --log-format json \
  >"$work/node.log" 2>&1 &
node_pid=$!
port=
for _ in $(seq 100); do
  port="$(sed -n 's/.*"grpc":"127\.0\.0\.1:\([0-9]*\)".*/\1/p' "$work/node.log" | head -1)"
  [[ -n "$port" ]] && break
  kill -0 "$node_pid" || { cat "$work/node.log"; exit 1; }
  sleep 0.1
done
[[ -n "$port" ]] || { echo "h2spec.sh: the node did not report its port" >&2; exit 1; }

echo "h2spec.sh: $("$h2spec" --version | head -1) against kcache-node on 127.0.0.1:$port"
# h2spec exits 1 when any case fails; the reports decide. Three runs: the node answers a
# gRPC request at once (a trailers-only error), so in a few cases h2spec's next frame
# races the answer and the case fails now and then (measured: 5.1 'closed', 8.1,
# 8.1.2.1, 5.1.2, each in about one run of three). A case fails the check only if it
# fails in every run; a real conformance gap fails every time.
for run in 1 2 3; do
  "$h2spec" -h 127.0.0.1 -p "$port" -o 5 -j "$work/report-$run.xml" >"$work/h2spec-$run.out" 2>&1 || true
  kill -0 "$node_pid" || { echo "!! the node died under h2spec" >&2; cat "$work/node.log"; exit 1; }
done

# Failures hyper's HTTP/2 (h2) or gRPC cause on purpose, with the reason each is fine:
python3 - "$work"/report-*.xml <<'PY'
import sys
import xml.etree.ElementTree as ET

EXPECTED = {
    ("generic/2", "Sends a WINDOW_UPDATE frame on half-closed (remote) stream"):
        "h2spec waits for a DATA frame, but a gRPC error reply to its GET is trailers-only "
        "(one HEADERS frame with END_STREAM); the frame is accepted and the stream answered "
        "(node/tests/malformed.rs checks exactly that)",
    ("generic/2", "Sends a PRIORITY frame on half-closed (remote) stream"):
        "as above: no DATA in a trailers-only gRPC reply; PRIORITY is accepted",
    ("http2/5.1.2", "Sends HEADERS frames that causes their advertised concurrent stream limit to be exceeded"):
        "h2spec sets INITIAL_WINDOW_SIZE to 0 so that the node cannot finish a stream and "
        "then opens one more than the advertised limit (1,024), expecting DATA to be needed; "
        "a gRPC error reply to its GET is trailers-only (one HEADERS frame with END_STREAM, "
        "not flow-controlled), so a stream is closed as soon as it is answered; whether the "
        "extra stream finds the limit reached depends on how fast the node answers the "
        "others (the case passes in some runs, fails in others). node/tests/api.rs checks "
        "the advertised limit",
    ("http2/8.1.2.6", 'Sends a HEADERS frame with the "content-length" header field which does not equal the DATA frame payload length'):
        "a race of the same kind: h2spec sends HEADERS (POST /, content-length 1) and then "
        "4 bytes of DATA; the node answers the unknown path with a trailers-only gRPC error "
        "as soon as the HEADERS arrive, and when that reply leaves before h2 reads the DATA, "
        "h2spec sees it instead of the stream error (measured alone: 4 of 30 runs at "
        "be2ec83, 9 of 30 with faster request metrics). The case with several DATA frames "
        "passes every time",
    ("http2/3.5", "Sends invalid connection preface"):
        "h2 closes the connection as RFC 9113 3.5 demands; h2spec has already sent bytes "
        "past the bad preface that the server never reads, so Linux answers the close with "
        "a RST, which h2spec reads as 'connection reset' rather than 'closed'",
}

def outcome(path):
    """Per case: 'pass', 'skip' or the failure's text."""
    cases = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        key = (case.get("package"), case.get("classname"))
        failure = case.find("failure")
        if failure is None:
            failure = case.find("error")
        if case.find("skipped") is not None:
            cases[key] = "skip"
        elif failure is not None:
            cases[key] = (failure.text or "").strip() or "failed"
        else:
            cases[key] = "pass"
    return cases

runs = [outcome(path) for path in sys.argv[1:]]
passed = failed = skipped = 0
unexpected = []
flaky = []
seen = set()
for key, first in runs[0].items():
    results = [run.get(key, "missing") for run in runs]
    if all(r == "skip" for r in results):
        skipped += 1
    elif any(r == "pass" for r in results):
        passed += 1
        if any(r not in ("pass", "skip") for r in results):
            flaky.append(key)
    else:
        failed += 1
        if key in EXPECTED:
            seen.add(key)
            print(f"  expected failure {key[0]} {key[1]!r}: {EXPECTED[key]}")
        else:
            unexpected.append(f"{key[0]} {key[1]!r}: {results[-1]}")
print(f"h2spec: {passed + failed + skipped} cases over {len(runs)} runs, {passed} passed "
      f"({len(flaky)} not in every run), {failed} failed in every run ({len(seen)} expected), "
      f"{skipped} skipped")
for key in flaky:
    print(f"  passed in some runs only: {key[0]} {key[1]!r}")
for line in unexpected:
    print(f"!! unexpected failure {line}")
sys.exit(1 if unexpected else 0)
PY
