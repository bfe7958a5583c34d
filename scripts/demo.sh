#!/usr/bin/env bash
# `make demo`: the daemon in front of three mock engines (one per engine flavor),
# in the foreground. Try the printed commands from another terminal; Ctrl-C
# stops the daemon and its engines.
set -euo pipefail
cd "$(dirname "$0")/.."

top=$PWD
demo=$top/build/demo
state=$demo/state
port=${YARD_DEMO_PORT:-8080}
mkdir -p "$demo"
mock=$top/build/mock-engine
sed -e "s#@MOCK@#$mock#g" -e "s#@PORT@#$port#g" examples/demo.yaml >"$demo/yard.yaml"

yard="build/yard --state-dir $state"
cat <<MSG

Switchyard demo: yard serve on 127.0.0.1:$port with three mock engines
(config: $demo/yard.yaml). In another terminal, from $top:

  $yard ps
  $yard start qwen-7b --wait          # a vLLM-like engine, 3 s load with progress
  $yard logs qwen-7b -n 20
  $yard logs qwen-7b -f                # Ctrl-C to leave
  $yard events
  curl -s 127.0.0.1:$port/health
  $yard stop --all

Ctrl-C here stops the daemon and every engine it started.

MSG
exec build/yard serve -c "$demo/yard.yaml" --state-dir "$state"
