// yard import llama-swap: a llama-swap config becomes a yard config that yard serves
// as llama-swap would have:
//   - macros (global, per model, one using another, ${MODEL_ID}) expanded, ${PORT} kept,
//     comment lines of cmd dropped, env lists, aliases (also as objects), ttl,
//     unloadTimeout, checkEndpoint of a generic engine, a fixed proxy port, cmdStop
//     (as stop_cmd, run when the swap stops alpha; one with ${PID} noted)
//   - the models of no group run one at a time (llama-swap's default group); swap and
//     exclusive groups as yard exclusive groups
//   - every key that does not carry over is one line on stderr with FILE:LINE:COL
//   - bad input: exit 2 with one line
import { test } from 'node:test';
import fs from 'node:fs';
import path from 'node:path';
import * as h from './lib/harness.mjs';

const { assert } = h;

function llamaSwapConfig(dir, { healthPort }) {
    const text = `
healthCheckTimeout: 60
startPort: ${20000 + Math.floor(Math.random() * 20000)}
logLevel: debug
macros:
  "engine": "${h.MOCK_ENGINE_BIN} --flavor llamacpp"
  "fast": "--load-time 50ms"
  "common": "\${engine} \${fast}"
models:
  "alpha":
    cmd: |
      # the engine, with llama-swap's macros
      \${common} --name \${MODEL_ID}
      --port \${PORT}
    ttl: 300
    aliases:
      - "first"
    name: "Alpha, the first"
    env:
      - "ALPHA_MODE=fast"
    filters:
      stripParams: "top_k, seed"
      setParams:
        temperature: 0.5
      setParamsByID:
        "\${MODEL_ID}:hot":
          temperature: 1.5
    cmdStop: "true stop \${MODEL_ID}"
  "beta":
    macros:
      "fast": "--load-time 80ms"
    cmd: \${common} --name \${MODEL_ID} --port \${PORT}
    unloadTimeout: 7
    cmdStop: kill -TERM \${PID}
    aliases:
      - name: "second"
  "gamma":
    cmd: ${h.MOCK_ENGINE_BIN} --flavor vllm --name gamma --port ${healthPort}
    proxy: "http://127.0.0.1:${healthPort}"
    checkEndpoint: /v1/models
    description: "a fixed port"
`;
    const file = path.join(dir, 'llama-swap.yaml');
    fs.writeFileSync(file, text);
    return file;
}

test('a llama-swap config translates, loads and serves one model at a time', async () => {
    const dir = h.tmpdir();
    const healthPort = await h.freePort();
    const file = llamaSwapConfig(dir, { healthPort });
    const out = path.join(dir, 'yard.yaml');
    const r = await h.yard(['import', 'llama-swap', file, '-o', out]);
    assert.equal(r.code, 0, r.stderr);
    const yaml = fs.readFileSync(out, 'utf8');
    // Macros expanded, comment line gone, ${PORT} kept for yard to fill.
    assert.match(yaml, new RegExp(`cmd: "${h.MOCK_ENGINE_BIN} --flavor llamacpp --load-time 50ms --name alpha --port \\$\\{PORT\\}"`));
    assert.match(yaml, /--load-time 80ms --name beta/);
    assert.doesNotMatch(yaml, /# the engine/);
    assert.match(yaml, /engine: llamacpp/);
    assert.match(yaml, /engine: vllm/);
    assert.match(yaml, /ttl: 300s/);
    assert.match(yaml, /stop_timeout: 7s/);
    assert.match(yaml, /startup_timeout: 60s/);
    assert.match(yaml, /"ALPHA_MODE": "fast"/);
    assert.match(yaml, /aliases: \["first"\]/);
    assert.match(yaml, /aliases: \["second"\]/);
    assert.match(yaml, new RegExp(`port: ${healthPort}`));
    assert.match(yaml, /strip_params: \["top_k", "seed"\]/);
    assert.match(yaml, /set_params: \{"temperature": 0.5\}/);
    assert.match(yaml, /"alpha:hot": \{"temperature": 1.5\}/);
    // Notes: what did not carry over, where it is, and why.
    const lines = r.stderr.split('\n').filter(Boolean);
    const noteFor = (key) => lines.find((l) => l.includes(`: ${key}: `));
    assert.match(noteFor('logLevel'), new RegExp(`^${file.replace(/[.]/g, '\\.')}:4:11: logLevel: not translated: `));
    assert.match(noteFor('models.alpha.name'), /not translated: yard does not serve display names yet/);
    assert.match(noteFor('models.gamma.description'), /not translated/);
    assert.match(noteFor('models.gamma.checkEndpoint'), /readiness is read by its adapter/);
    // cmdStop is stop_cmd; llama-swap's ${PID} names nothing yard knows.
    assert.match(yaml, /stop_cmd: "true stop alpha"/);
    assert.doesNotMatch(yaml, /PID/);
    assert.match(noteFor('models.beta.cmdStop'), /not translated: \$\{PID\} has no meaning in yard/);
    assert.match(r.stderr, /wrote '/);
    assert.equal((await h.yard(['check', '-c', out])).code, 0);

    // Served: the models of no group run one at a time, as in llama-swap.
    const port = await h.freePort();
    fs.writeFileSync(out, `listen: 127.0.0.1:${port}\n` + yaml);
    const d = await h.startDaemon({ config: out, stateDir: path.join(dir, 'st') });
    const ask = (model) =>
        h.httpPost(`http://127.0.0.1:${port}/v1/chat/completions`, {
            model,
            max_tokens: 2,
            messages: [{ role: 'user', content: 'hi' }],
        });
    let res = await ask('first');
    assert.equal(res.status, 200, res.body);
    const state = async () =>
        Object.fromEntries((await h.ps(d.stateDir)).map((e) => [e.name, e.state]));
    assert.equal((await state()).alpha, 'ready');
    res = await ask('second');
    assert.equal(res.status, 200, res.body);
    const s = await state();
    assert.equal(s.beta, 'ready');
    assert.equal(s.alpha, 'stopped', 'alpha kept running beside beta');
    res = await ask('alpha:hot');
    assert.equal(res.status, 200, res.body);
    res = await ask('gamma');
    assert.equal(res.status, 200, res.body);
    assert.equal((await state()).beta, 'stopped');
});

test('groups: swap, exclusive and persistent become yard exclusive groups', async () => {
    const dir = h.tmpdir();
    const file = path.join(dir, 'ls.yaml');
    const cmd = (n) => `${h.MOCK_ENGINE_BIN} --flavor llamacpp --name ${n} --port \${PORT}`;
    fs.writeFileSync(
        file,
        `models:\n` +
            ['a', 'b', 'c', 'd', 'p', 'solo'].map((n) => `  ${n}:\n    cmd: ${cmd(n)}\n`).join('') +
            `groups:\n` +
            `  swappers: { swap: true, exclusive: true, members: [a, b] }\n` +
            `  together: { swap: false, exclusive: false, members: [c, d] }\n` +
            `  forever: { persistent: true, swap: false, exclusive: false, members: [p] }\n`,
    );
    const r = await h.yard(['import', 'llama-swap', file]);
    assert.equal(r.code, 0, r.stderr);
    const groups = r.stdout.slice(r.stdout.indexOf('groups:'));
    const pairs = [...groups.matchAll(/members: \[([^\]]*)\]/g)].map((m) =>
        m[1].replace(/"/g, '').split(', ').sort().join('+'),
    );
    // a and b swap; each of them excludes c, d and solo (the default group) but never p;
    // solo (default group, exclusive) also excludes c and d.
    assert.deepEqual(pairs.sort(), ['a+b', 'a+c', 'a+d', 'a+solo', 'b+c', 'b+d', 'b+solo', 'c+solo', 'd+solo'].sort());
    assert.match(r.stderr, /groups: an exclusive group unloads the non-exclusive ones/);
});

test("routing.router.use: matrix: models that share no set exclude each other", async () => {
    const dir = h.tmpdir();
    const file = path.join(dir, 'ls.yaml');
    const cmd = (n) => `${h.MOCK_ENGINE_BIN} --flavor llamacpp --name ${n} --port \${PORT}`;
    fs.writeFileSync(
        file,
        `models:\n` +
            ['gemma', 'qwen', 'tts', 'rerank', 'big'].map((n) => `  ${n}:\n    cmd: ${cmd(n)}\n`).join('') +
            `routing:\n  router:\n    use: matrix\n    settings:\n      matrix:\n` +
            `        vars: { g: gemma, q: qwen, v: tts }\n` +
            `        evict_costs: { v: 50 }\n` +
            `        sets:\n` +
            `          standard: "(g | q) & v"\n` +
            `          more: "+standard & rerank"\n` +
            `          full: "big"\n` +
            `          broken: "g & (q"\n`,
    );
    const r = await h.yard(['import', 'llama-swap', file]);
    assert.equal(r.code, 0, r.stderr);
    const pairs = [...r.stdout.matchAll(/members: \[([^\]]*)\]/g)]
        .map((m) => m[1].replace(/"/g, '').split(', ').sort().join('+'))
        .sort();
    // Allowed together: g-v, q-v, g-rerank, q-rerank, v-rerank; big runs alone.
    assert.deepEqual(pairs, [
        'big+gemma', 'big+qwen', 'big+rerank', 'big+tts', 'gemma+qwen',
    ]);
    assert.match(r.stderr, /matrix\.sets\.broken: 'g & \(q': a '\(' is not closed; the set is left out/);
    assert.match(r.stderr, /matrix\.evict_costs: not translated: /);
});

test('bad input: one line and exit 2', async () => {
    const dir = h.tmpdir();
    const bad = path.join(dir, 'bad.yaml');
    fs.writeFileSync(bad, 'models:\n  a: [\n');
    let r = await h.yard(['import', 'llama-swap', bad]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, new RegExp(`^yard import: ${bad.replace(/[.]/g, '\\.')}:\\d+:\\d+: not YAML: `));
    assert.equal(r.stderr.trim().split('\n').length, 1);
    fs.writeFileSync(bad, 'listen: 1\n');
    r = await h.yard(['import', 'llama-swap', bad]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /not a llama-swap config: it needs a 'models' mapping/);
    r = await h.yard(['import', 'llama-swap', path.join(dir, 'missing.yaml')]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /cannot read '.*missing\.yaml': No such file or directory/);
    r = await h.yard(['import', 'ollama', bad]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /imports llama-swap configs only, not 'ollama'/);
    // -o never overwrites.
    fs.writeFileSync(bad, 'models:\n  a:\n    cmd: x --port ${PORT}\n');
    r = await h.yard(['import', 'llama-swap', bad, '-o', bad]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /cannot create '.*bad\.yaml': File exists; choose another name/);
    // A translation yard refuses says so, after the notes: exit 1.
    fs.writeFileSync(bad, 'models:\n  a:\n    cmd: "llama-server -m x.gguf"\n');
    r = await h.yard(['import', 'llama-swap', bad]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /yard refuses the translation as it stands:\n {2}.*the command gives the engine no port/);
});
