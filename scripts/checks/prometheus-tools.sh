# Installs Debian's prometheus package (promtool and the server) when missing and we
# are root. Sourced by alerts.sh and monitoring-live.sh; run alone (as scripts/test.sh
# does with every check), it makes sure the tools are there and says which.
if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    apt-get update -qq >/dev/null || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  fi
fi
if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then
  echo "promtool and prometheus are needed (apt-get install prometheus)" >&2
  exit 1
fi
echo "prometheus tools: $(promtool --version 2>&1 | head -1)"
