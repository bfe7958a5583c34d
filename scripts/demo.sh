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

  curl -s 127.0.0.1:$port/v1/models
  curl -sN 127.0.0.1:$port/v1/chat/completions -H 'Content-Type: application/json' \
    -d '{"model":"qwen","stream":true,"messages":[{"role":"user","content":"hi"}]}'
        # qwen is an alias of qwen-7b: it starts on demand; the stream shows
        # ": loading qwen-7b 40%" comments while the engine loads
  curl -s 127.0.0.1:$port/v1/chat/completions -H 'Content-Type: application/json' \
    -d '{"model":"llama-8b","messages":[{"role":"user","content":"hi"}]}'
        # llama-8b and qwen-7b share an exclusive group: yard swaps them
  $yard ps
  $yard logs qwen-7b -n 20
  $yard logs qwen-7b -f                # Ctrl-C to leave
  $yard events
  curl -s 127.0.0.1:$port/metrics | grep ^yard_
  $yard stop --all

Ctrl-C here stops the daemon and every engine it started.

MSG
exec build/yard serve -c "$demo/yard.yaml" --state-dir "$state"
