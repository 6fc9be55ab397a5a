#!/usr/bin/env bash
# Re-captures the samples that README.md, docs/http-api.md and docs/mqtt.md show, from the service as
# `make run` starts it: the MQTT transcript of the demo clip (a face, the switch OFF and ON, a clean stop)
# and the /infer answer for docs/face.jpg. Run it after shipping a model, with a broker on 127.0.0.1:1883,
# and paste what it prints into those pages (tests/service/test_svc_newcomer.py checks them).
#
#   bash tools/capture_samples.sh > /tmp/samples.txt
set -euo pipefail
cd "$(dirname "$0")/.."
state=$(mktemp -d)
trap 'kill "$sub" "$svc" 2>/dev/null || true; rm -rf "$state"' EXIT
mosquitto_sub -h 127.0.0.1 -t 'fer/#' -v > "$state/mqtt.txt" &
sub=$!
sleep 1
FER_STATE_DIR="$state" .venv/bin/python -m service --config deploy/config.yaml > "$state/service.log" 2>&1 &
svc=$!
for _ in $(seq 120); do
  curl -sf localhost:8000/readyz > /dev/null && break
  sleep 0.5
done
sleep 8
mosquitto_pub -h 127.0.0.1 -t fer/demo/analysis/set -m OFF
sleep 2
mosquitto_pub -h 127.0.0.1 -t fer/demo/analysis/set -m ON
sleep 6
echo "## POST /infer docs/face.jpg"
curl -s -F file=@docs/face.jpg localhost:8000/infer
echo
kill -INT "$svc"
wait "$svc" || true
sleep 1
echo "## mosquitto_sub -h 127.0.0.1 -t 'fer/#' -v"
grep -v '^homeassistant' "$state/mqtt.txt"
