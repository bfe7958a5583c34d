// Zero-reload switching: models that share a GPU swap by sleeping instead of
// stopping. Mock engines keep their "GPU memory" in a ledger file that the
// daemon's declared-GPU inventory reads (`gpus:` + `gpu_ledger:`), so the memory a
// sleeping engine gives back is visible in `yard gpus --json`.
//
// What is covered:
//   - vLLM sleep level 1 (eviction {weights: offload}) in an exclusive group: the
//     sleeping engine keeps its pid, holds 5% of its memory, and is woken (not
//     started again) by the next request, after a 1-token warm-up
//   - vLLM level 2 (discard): the wake reloads the weights (collective_rpc
//     reload_weights) and the answers are right again
//   - SGLang memory release / resume, same pid
//   - `yard sleep` / `yard wake` by hand: states, output, exit statuses
//   - a sleeping engine never receives a request (the mock vLLM answers 500 and
//     exits if one reaches it asleep)
//   - a wake that fails stops the instance (mock --fail wake-fail)
//   - a stream that arrives while its model sleeps gets `: loading` comments first
//
// Durations (cold start against wake) are printed, never asserted.

import { test } from 'node:test';
import path from 'node:path';
import fs from 'node:fs';
import {
    assert,
    httpPost,
    ps,
    waitState,
    waitFor,
    yard,
    yardJson,
    tmpdir,
    pidAlive,
    pgidOf,
    cmdlineOf,
    processesMatching,
    parseSSE,
    MARKER,
} from './lib/harness.mjs';
import {
    METRICS,
    routerDaemon,
    mockCmd,
    mockText,
    chatBody,
    chatStreamText,
    openStream,
    withTimeout,
    getMetrics,
    sampleSum,
    events,
    engineLog,
    yardOk,
} from './lib/router-helpers.mjs';

const GiB = 1024 ** 3;

const entry = async (dir, name) => (await ps(dir)).find((e) => e.name === name);
const chat = (y, model, opts) => httpPost(`${y.base}/v1/chat/completions`, chatBody(model, opts));

/**
 * A daemon with one declared 40 GiB GPU whose used memory comes from a ledger the
 * mock engines write. `models` map a name to { flavor, vram, load, extra, ... }:
 * flavor, the engine's --vram (and the model's vram), --load-time, more mock
 * arguments; the other keys (eviction, ...) go to the model's config as they are.
 */
async function gpuDaemon({ models, groups, router, memory = '40GiB' }) {
    const ledger = path.join(tmpdir('yard-ledger-'), 'ledger');
    const cfg = {};
    for (const [name, m] of Object.entries(models)) {
        const { flavor, vram = '30GiB', load = '1s', extra = '', ...rest } = m;
        const engineArgs = `--load-time ${load} --tokens-per-sec 500 --vram ${vram} --ledger ${ledger} ${extra}`;
        cfg[name] = { engine: flavor, cmd: mockCmd(flavor, engineArgs), vram, ...rest };
    }
    const top =
        `gpus: ${JSON.stringify([{ index: 0, name: 'Mock GPU 40G', memory }])}\n` +
        `gpu_ledger: ${JSON.stringify(ledger)}\n`;
    const y = await routerDaemon({ models: cfg, groups, router, top });
    return { ...y, ledger };
}

/** `yard gpus --json`. */
const gpus = (dir) => yardJson(['gpus', '--json'], { stateDir: dir });

/** The GPU memory the inventory gives pid (null when it lists no such process). */
async function gpuUsed(dir, pid) {
    const inv = await gpus(dir);
    for (const g of inv.gpus) for (const p of g.processes) if (p.pid === pid) return p.used;
    return null;
}

/** Asserts bytes is within 0.02 GiB of want (the ledger rounds 5% down). */
function about(bytes, want, what) {
    const got = bytes === null ? 'not listed' : `${(bytes / GiB).toFixed(3)} GiB`;
    assert.ok(
        bytes !== null && Math.abs(bytes - want) <= 0.02 * GiB,
        `${what}: ${got}, want ~${(want / GiB).toFixed(2)} GiB`
    );
}

/** Events of model, oldest first. */
const modelEvents = async (dir, model) => (await events(dir)).filter((e) => e.model === model);
const transitions = (evs, from, to) => evs.filter((e) => e.from === from && e.to === to);

/** Index of the first line at or after `from` that matches re (-1: none). */
function lineIndex(lines, re, from = 0) {
    for (let i = from; i < lines.length; i++) if (re.test(lines[i])) return i;
    return -1;
}

/** Engine processes this run started whose command line carries `--name NAME`,
 *  except the pids in `known`. */
function strayEngines(name, known = []) {
    return processesMatching(MARKER).filter((p) => {
        const argv = cmdlineOf(p) || [];
        const i = argv.indexOf('--name');
        return i >= 0 && argv[i + 1] === name && !known.includes(p);
    });
}

/** Kills (SIGKILL, by group) the engines of `name` that yard does not list in
 *  `yard ps`: an instance yard lost track of would outlive the test. */
async function killStrays(dir, name) {
    const e = await entry(dir, name).catch(() => null);
    killGroups(strayEngines(name, e && e.pid ? [e.pid] : []));
}

function killGroups(pids) {
    for (const p of pids) {
        const g = pgidOf(p);
        try {
            process.kill(g ? -g : p, 'SIGKILL');
        } catch {
            // gone already
        }
    }
}

/** The environment of pid as an object. */
function environOf(pid) {
    const raw = fs.readFileSync(`/proc/${pid}/environ`, 'latin1');
    return Object.fromEntries(
        raw
            .split('\0')
            .filter((s) => s.includes('='))
            .map((s) => [s.slice(0, s.indexOf('=')), s.slice(s.indexOf('=') + 1)])
    );
}

// ---------------------------------------------------------------- vLLM level 1

test('offload (vLLM level 1): a sleeps for b (same pid, 5% of its memory), then comes back by a wake', async () => {
    const y = await gpuDaemon({
        models: {
            a: { flavor: 'vllm', eviction: { weights: 'offload' } },
            b: { flavor: 'vllm', eviction: { weights: 'offload' } },
        },
        groups: { pair: { exclusive: true, members: ['a', 'b'] } },
    });

    let t0 = Date.now();
    const r1 = await chat(y, 'a', { max_tokens: 3 });
    const coldMs = Date.now() - t0;
    assert.equal(r1.status, 200, r1.body);
    assert.equal(JSON.parse(r1.body).choices[0].message.content, mockText(3));
    const a1 = await entry(y.dir, 'a');
    assert.equal(a1.state, 'ready');
    const pidA = a1.pid;
    assert.ok(pidAlive(pidA), `a's engine ${pidA} is not running`);

    // The engine was started for sleeping: vLLM needs both the flag and dev mode.
    assert.ok(cmdlineOf(pidA).includes('--enable-sleep-mode'), `argv: ${cmdlineOf(pidA).join(' ')}`);
    assert.equal(environOf(pidA).VLLM_SERVER_DEV_MODE, '1');
    about(await gpuUsed(y.dir, pidA), 30 * GiB, 'a awake');

    const r2 = await chat(y, 'b', { max_tokens: 3 });
    assert.equal(r2.status, 200, r2.body);
    assert.equal(JSON.parse(r2.body).model, 'b');
    const [a2, b2] = [await entry(y.dir, 'a'), await entry(y.dir, 'b')];
    assert.equal(a2.state, 'sleeping', JSON.stringify(a2));
    assert.equal(a2.pid, pidA, 'a sleeps in the same process');
    assert.match(a2.reason, /asleep at level 1/);
    assert.ok(pidAlive(pidA), 'the sleeping engine must stay alive');
    assert.equal(b2.state, 'ready');
    const pidB = b2.pid;
    assert.notEqual(pidB, pidA);

    // The inventory: a holds 5% of 30 GiB while asleep, b all of its 30 GiB.
    const inv = await gpus(y.dir);
    assert.equal(inv.source, 'declared');
    assert.equal(inv.gpus.length, 1);
    const g = inv.gpus[0];
    const pa = g.processes.find((p) => p.pid === pidA);
    const pb = g.processes.find((p) => p.pid === pidB);
    assert.ok(pa && pb, `processes: ${JSON.stringify(g.processes)}`);
    assert.equal(pa.model, 'a');
    assert.equal(pb.model, 'b');
    about(pa.used, 1.5 * GiB, 'a asleep');
    about(pb.used, 30 * GiB, 'b awake');
    assert.equal(g.total, 40 * GiB);
    assert.equal(g.used, pa.used + pb.used);
    assert.equal(g.free, g.total - g.used);

    t0 = Date.now();
    const r3 = await chat(y, 'a', { max_tokens: 3 });
    const swapBackMs = Date.now() - t0;
    assert.equal(r3.status, 200, r3.body);
    assert.equal(JSON.parse(r3.body).choices[0].message.content, mockText(3));
    const [a3, b3] = [await entry(y.dir, 'a'), await entry(y.dir, 'b')];
    assert.equal(a3.state, 'ready');
    assert.equal(a3.pid, pidA, 'a woke in the same process');
    assert.match(a3.reason, /woken from level 1/);
    assert.equal(b3.state, 'sleeping');
    assert.equal(b3.pid, pidB);
    assert.ok(pidAlive(pidB));
    about(await gpuUsed(y.dir, pidA), 30 * GiB, 'a awake again');
    about(await gpuUsed(y.dir, pidB), 1.5 * GiB, 'b asleep');

    // No cold start for a: one start, and the way back was sleeping -> ready.
    const ev = await modelEvents(y.dir, 'a');
    assert.equal(transitions(ev, 'stopped', 'starting').length, 1, JSON.stringify(ev));
    assert.equal(transitions(ev, 'ready', 'sleeping').length, 1, JSON.stringify(ev));
    assert.equal(transitions(ev, 'sleeping', 'ready').length, 1, JSON.stringify(ev));

    // The wake went through the engine's verbs, then a 1-token warm-up
    // (POST /v1/completions) before the client's request.
    const lines = (await engineLog(y.dir, 'a')).split('\n');
    const iSleep = lineIndex(lines, /"POST \/sleep\?level=1 HTTP/);
    const iWake = lineIndex(lines, /"POST \/wake_up[ ?]/, iSleep + 1);
    const iWarm = lineIndex(lines, /"POST \/v1\/completions HTTP/, iWake + 1);
    const iChat = lineIndex(lines, /"POST \/v1\/chat\/completions HTTP/, iWake + 1);
    assert.ok(iSleep >= 0 && iWake > iSleep, `no sleep then wake_up in a's log:\n${lines.join('\n')}`);
    assert.ok(iWarm > iWake && iChat > iWarm, `no warm-up between wake_up and the request:\n${lines.join('\n')}`);

    const swaps = sampleSum((await getMetrics(y.base)).all, METRICS.swaps);
    assert.ok(swaps >= 2, `${METRICS.swaps} = ${swaps}`);

    // Durations, for the record: the engine's own words, yard's events, the client.
    const log = lines.join('\n');
    const engineCold = log.match(/init engine .* took ([\d.]+) seconds/);
    const engineWake = log.match(/It took ([\d.]+) seconds to wake up/);
    const start = transitions(ev, 'stopped', 'starting')[0];
    const ready = transitions(ev, 'starting', 'ready')[0];
    console.log(
        `a: cold start ${engineCold ? engineCold[1] : '?'} s, wake ${engineWake ? engineWake[1] : '?'} s ` +
            `(engine's log); starting -> ready ${ready.ts_ms - start.ts_ms} ms (events); ` +
            `client: first request ${coldMs} ms, request after the swap back ${swapBackMs} ms ` +
            `(b's drain and sleep, a's wake and warm-up)`
    );
    await y.d.stop();
});

// ---------------------------------------------------------------- vLLM level 2

test('discard (vLLM level 2): the wake reloads the weights, then b answers correctly', async () => {
    const y = await gpuDaemon({
        models: {
            a: { flavor: 'vllm', eviction: { weights: 'offload' } },
            b: { flavor: 'vllm', eviction: { weights: 'discard' } },
        },
        groups: { pair: { exclusive: true, members: ['a', 'b'] } },
    });
    assert.equal((await chat(y, 'b', { max_tokens: 4 })).status, 200);
    const pidB = (await entry(y.dir, 'b')).pid;

    assert.equal((await chat(y, 'a', { max_tokens: 4 })).status, 200);
    const b2 = await entry(y.dir, 'b');
    assert.equal(b2.state, 'sleeping');
    assert.equal(b2.pid, pidB);
    assert.match(b2.reason, /asleep at level 2/);
    about(await gpuUsed(y.dir, pidB), 1.5 * GiB, 'b asleep at level 2');

    const r = await chat(y, 'b', { max_tokens: 4 });
    assert.equal(r.status, 200, r.body);
    // The mock generates "??0 ??1 ..." until its weights are reloaded.
    assert.equal(JSON.parse(r.body).choices[0].message.content, mockText(4));
    const b3 = await entry(y.dir, 'b');
    assert.equal(b3.state, 'ready');
    assert.equal(b3.pid, pidB);
    assert.match(b3.reason, /woken from level 2/);
    about(await gpuUsed(y.dir, pidB), 30 * GiB, 'b awake');

    // In the engine's log, in order: level-2 sleep, weights woken, weights reloaded,
    // KV cache woken, prefix cache reset, warm-up, the client's request.
    const lines = (await engineLog(y.dir, 'b')).split('\n');
    const steps = [
        /"POST \/sleep\?level=2 HTTP/,
        /"POST \/wake_up\?tags=weights HTTP/,
        /Reloading weights inplace/,
        /"POST \/collective_rpc HTTP/,
        /"POST \/wake_up\?tags=kv_cache HTTP/,
        /"POST \/reset_prefix_cache HTTP/,
        /"POST \/v1\/completions HTTP/,
        /"POST \/v1\/chat\/completions HTTP/,
    ];
    let at = 0;
    for (const re of steps) {
        const i = lineIndex(lines, re, at);
        assert.ok(i >= 0, `no ${re} after line ${at} of b's log:\n${lines.join('\n')}`);
        at = i + 1;
    }
    assert.equal(transitions(await modelEvents(y.dir, 'b'), 'stopped', 'starting').length, 1);
    await y.d.stop();
});

// ---------------------------------------------------------------- SGLang

test('SGLang offload: release and resume of memory, same pid', async () => {
    const y = await gpuDaemon({
        models: {
            s1: { flavor: 'sglang', eviction: { weights: 'offload' }, extra: '--warmup-time 50ms' },
            s2: { flavor: 'sglang', eviction: { weights: 'offload' }, extra: '--warmup-time 50ms' },
        },
        groups: { pair: { exclusive: true, members: ['s1', 's2'] } },
    });
    assert.equal((await chat(y, 's1', { max_tokens: 2 })).status, 200);
    const pid1 = (await entry(y.dir, 's1')).pid;
    assert.ok(cmdlineOf(pid1).includes('--enable-memory-saver'), `argv: ${cmdlineOf(pid1).join(' ')}`);

    assert.equal((await chat(y, 's2', { max_tokens: 2 })).status, 200);
    const s1 = await entry(y.dir, 's1');
    assert.equal(s1.state, 'sleeping');
    assert.equal(s1.pid, pid1);
    assert.ok(pidAlive(pid1));
    about(await gpuUsed(y.dir, pid1), 1.5 * GiB, 's1 released');
    const pid2 = (await entry(y.dir, 's2')).pid;

    const r = await chat(y, 's1', { max_tokens: 5 });
    assert.equal(r.status, 200, r.body);
    assert.equal(JSON.parse(r.body).choices[0].message.content, mockText(5));
    const s1b = await entry(y.dir, 's1');
    assert.equal(s1b.state, 'ready');
    assert.equal(s1b.pid, pid1);
    about(await gpuUsed(y.dir, pid1), 30 * GiB, 's1 resumed');
    const s2 = await entry(y.dir, 's2');
    assert.equal(s2.state, 'sleeping');
    assert.equal(s2.pid, pid2);

    const lines = (await engineLog(y.dir, 's1')).split('\n');
    const iRel = lineIndex(lines, /"POST \/release_memory_occupation HTTP/);
    const iRes = lineIndex(lines, /"(GET|POST) \/resume_memory_occupation HTTP/, iRel + 1);
    assert.ok(iRel >= 0 && iRes > iRel, `no release then resume in s1's log:\n${lines.join('\n')}`);
    for (const m of ['s1', 's2']) {
        assert.equal(transitions(await modelEvents(y.dir, m), 'stopped', 'starting').length, 1, m);
    }
    await y.d.stop();
});

// ---------------------------------------------------------------- by hand

test('yard sleep / yard wake by hand: states, output and exit statuses', async () => {
    const y = await gpuDaemon({
        models: {
            a: { flavor: 'vllm', eviction: { weights: 'offload' } },
            n: { flavor: 'vllm', vram: '4GiB' }, // eviction defaults to discard + stop: no sleep
            l: { flavor: 'llamacpp', vram: '2GiB' }, // an engine with no sleep of its own
        },
    });
    const run = (args) => yard(args, { stateDir: y.dir });

    // Nothing to sleep or wake while stopped.
    let r = await run(['sleep', 'a']);
    assert.equal(r.code, 1, `sleep of a stopped model: ${r.stdout}${r.stderr}`);
    assert.match(r.stderr, /stopped/);
    r = await run(['wake', 'a']);
    assert.equal(r.code, 1, `wake of a stopped model: ${r.stdout}${r.stderr}`);
    assert.match(r.stderr, /stopped/);
    r = await run(['sleep', 'nope']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /nope/);
    assert.equal((await entry(y.dir, 'a')).state, 'stopped');

    await yardOk(y.dir, ['start', 'a', '--wait']);
    const pid = (await entry(y.dir, 'a')).pid;

    r = await run(['wake', 'a']);
    assert.equal(r.code, 0, `wake of a ready model: ${r.stdout}${r.stderr}`);
    assert.equal(r.stdout, "'a' is already ready\n");

    r = await run(['sleep', 'a']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, "'a' is sleeping\n");
    let e = await entry(y.dir, 'a');
    assert.equal(e.state, 'sleeping');
    assert.equal(e.pid, pid);
    assert.match(e.reason, /asleep at level 1/);
    about(await gpuUsed(y.dir, pid), 1.5 * GiB, 'a asleep');

    r = await run(['sleep', 'a']);
    assert.equal(r.code, 0, `sleep of a sleeping model: ${r.stdout}${r.stderr}`);
    assert.equal(r.stdout, "'a' is already sleeping\n");
    r = await run(['sleep', 'a', '--level', '2']); // another level than it sleeps at
    assert.equal(r.code, 1, `sleep at another level: ${r.stdout}${r.stderr}`);
    assert.match(r.stderr, /sleeping/);

    r = await run(['wake', 'a']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, "'a' is ready\n");
    e = await entry(y.dir, 'a');
    assert.equal(e.state, 'ready');
    assert.equal(e.pid, pid);
    about(await gpuUsed(y.dir, pid), 30 * GiB, 'a awake');

    // --level overrides the policy: level 2 on an offload model, then the reload.
    r = await run(['sleep', 'a', '--level', '2']);
    assert.equal(r.code, 0, r.stderr);
    assert.match((await entry(y.dir, 'a')).reason, /asleep at level 2/);
    await yardOk(y.dir, ['wake', 'a']);
    assert.match(await engineLog(y.dir, 'a'), /Reloading weights inplace/);
    const ok = await chat(y, 'a', { max_tokens: 3 });
    assert.equal(ok.status, 200, ok.body);
    assert.equal(JSON.parse(ok.body).choices[0].message.content, mockText(3));

    for (const bad of ['3', '0', 'x']) {
        r = await run(['sleep', 'a', '--level', bad]);
        assert.notEqual(r.code, 0, `--level ${bad} accepted`);
        assert.match(r.stderr, /level/);
    }
    assert.equal((await entry(y.dir, 'a')).state, 'ready');

    // A model whose policy does not sleep: refused with a pointer to `eviction`,
    // and it keeps running.
    await yardOk(y.dir, ['start', 'n', '--wait']);
    const pidN = (await entry(y.dir, 'n')).pid;
    r = await run(['sleep', 'n']);
    assert.equal(r.code, 1, `${r.stdout}${r.stderr}`);
    assert.match(r.stderr, /eviction/);
    e = await entry(y.dir, 'n');
    assert.equal(e.state, 'ready');
    assert.equal(e.pid, pidN);
    // An engine that cannot sleep in place: the eviction that works for it, which yard check takes.
    await yardOk(y.dir, ['start', 'l', '--wait']);
    r = await run(['sleep', 'l']);
    assert.equal(r.code, 1, `${r.stdout}${r.stderr}`);
    assert.equal(
        r.stderr,
        "yard: cannot sleep 'l': engine 'llamacpp' of 'l' cannot sleep in place; set eviction: " +
            '{process: cuda_suspend} (or checkpoint) in its config, or pass --level suspend\n',
    );
    assert.equal((await entry(y.dir, 'l')).state, 'ready');

    // Every one of the above was one start per model.
    for (const m of ['a', 'n']) {
        assert.equal(transitions(await modelEvents(y.dir, m), 'stopped', 'starting').length, 1, m);
    }
    await y.d.stop();
});

test(
    'yard sleep --level 1 on a vLLM model not started for sleeping is refused and leaves it running',
    async () => {
        const y = await gpuDaemon({ models: { n: { flavor: 'vllm', vram: '4GiB' } } });
        await yardOk(y.dir, ['start', 'n', '--wait']);
        const pid = (await entry(y.dir, 'n')).pid;
        const r = await yard(['sleep', 'n', '--level', '1'], { stateDir: y.dir });
        assert.equal(r.code, 1, `${r.stdout}${r.stderr}`);
        assert.match(r.stderr, /eviction|sleep mode/);
        const e = await entry(y.dir, 'n');
        assert.equal(e.state, 'ready', `a refused sleep changed the model: ${JSON.stringify(e)}`);
        assert.equal(e.pid, pid);
        await y.d.stop();
    }
);

test(
    'a model loaded with `yard start` and put to sleep with `yard sleep` is woken by the next request',
    async () => {
        const y = await gpuDaemon({
            models: { a: { flavor: 'vllm', eviction: { weights: 'offload' } } },
            router: { max_wait: '5s' },
        });
        await yardOk(y.dir, ['start', 'a', '--wait']);
        const pid = (await entry(y.dir, 'a')).pid;
        await yardOk(y.dir, ['sleep', 'a']);
        const r = await chat(y, 'a', { max_tokens: 2 });
        assert.equal(r.status, 200, r.body);
        assert.equal(JSON.parse(r.body).choices[0].message.content, mockText(2));
        const e = await entry(y.dir, 'a');
        assert.equal(e.state, 'ready');
        assert.equal(e.pid, pid);
        await y.d.stop();
    }
);

// ---------------------------------------------------------------- never forwarded asleep

test('a sleeping engine never gets a request: 60 concurrent requests across swaps, all 200, same pids', async () => {
    // The mock vLLM answers a request that reaches it asleep with 500 and exits.
    const y = await gpuDaemon({
        models: {
            a: { flavor: 'vllm', eviction: { weights: 'offload' } },
            b: { flavor: 'vllm', eviction: { weights: 'offload' } },
        },
        groups: { pair: { exclusive: true, members: ['a', 'b'] } },
    });
    assert.equal((await chat(y, 'a', { max_tokens: 1 })).status, 200);
    assert.equal((await chat(y, 'b', { max_tokens: 1 })).status, 200);
    const pidA = (await entry(y.dir, 'a')).pid;
    const pidB = (await entry(y.dir, 'b')).pid;
    assert.equal((await entry(y.dir, 'a')).state, 'sleeping');

    // Waves of requests for both models, 30 ms apart: some arrive while a sleeps,
    // some while it wakes, some while b drains or sleeps.
    const sent = [];
    for (let wave = 0; wave < 6; wave++) {
        for (let i = 0; i < 10; i++) {
            const model = (wave + i) % 3 === 0 ? 'b' : 'a';
            sent.push(chat(y, model, { max_tokens: 3 }).then((r) => ({ model, r })));
        }
        await new Promise((res) => setTimeout(res, 30));
    }
    const results = await Promise.all(sent);
    results.forEach(({ model, r }, i) => {
        assert.equal(r.status, 200, `request ${i} (${model}): ${r.status} ${r.body}`);
        const o = JSON.parse(r.body);
        assert.equal(o.model, model);
        assert.equal(o.choices[0].message.content, mockText(3));
    });

    // Both engines are the processes they were: nothing crashed and restarted.
    assert.ok(pidAlive(pidA) && pidAlive(pidB), 'an engine died');
    const list = await ps(y.dir);
    for (const [m, pid] of [
        ['a', pidA],
        ['b', pidB],
    ]) {
        const e = list.find((x) => x.name === m);
        assert.ok(['ready', 'sleeping'].includes(e.state), JSON.stringify(e));
        assert.equal(e.pid, pid, `${m} has a new process`);
        const ev = await modelEvents(y.dir, m);
        assert.equal(transitions(ev, 'stopped', 'starting').length, 1, `${m} restarted: ${JSON.stringify(ev)}`);
        assert.ok(transitions(ev, 'sleeping', 'ready').length + transitions(ev, 'ready', 'sleeping').length >= 1);

        // The engine's log: no request between a sleep and the following wake, and
        // never the error a request to a sleeping vLLM causes.
        const log = await engineLog(y.dir, m, 5000);
        assert.doesNotMatch(log, /EngineDeadError|EngineCore encountered/, `${m} got a request asleep`);
        const lines = log.split('\n');
        let asleep = false;
        for (const l of lines) {
            if (/"POST \/sleep\?level=/.test(l)) asleep = true;
            else if (/"POST \/wake_up[ ?]/.test(l)) asleep = false;
            else if (asleep && /"POST \/v1\//.test(l)) assert.fail(`${m} served a request while asleep: ${l}`);
        }
    }
    await y.d.stop();
});

// ---------------------------------------------------------------- failed wake

test('wake-fail by hand: yard wake fails, the instance is stopped, its process and memory are gone', async () => {
    const y = await gpuDaemon({
        models: { w: { flavor: 'vllm', vram: '10GiB', eviction: { weights: 'offload' }, extra: '--fail wake-fail' } },
    });
    await yardOk(y.dir, ['start', 'w', '--wait']);
    await yardOk(y.dir, ['sleep', 'w']);
    const pid = (await entry(y.dir, 'w')).pid;
    about(await gpuUsed(y.dir, pid), 0.5 * GiB, 'w asleep');

    const r = await yard(['wake', 'w'], { stateDir: y.dir });
    assert.equal(r.code, 1, `${r.stdout}${r.stderr}`);
    assert.match(r.stderr, /wake/);
    const e = await waitState(y.dir, 'w', ['stopped', 'failed'], 10000);
    assert.match(e.reason, /wake failed/);
    assert.equal(e.pid, null);
    await waitFor(() => !pidAlive(pid), { timeoutMs: 10000, what: `w's old engine ${pid} to exit` });
    assert.equal(await gpuUsed(y.dir, pid), null, 'the stopped engine still holds memory');
    const ev = await modelEvents(y.dir, 'w');
    const esc = ev.find((x) => x.from === 'sleeping' && x.to === 'stopping');
    assert.ok(esc, `no sleeping -> stopping: ${JSON.stringify(ev)}`);
    assert.match(esc.reason, /wake failed/);
    // Nothing started it again on its own.
    assert.equal(transitions(ev, 'stopped', 'starting').length, 1);
    assert.deepEqual(strayEngines('w'), [], 'an engine of w is still running');
    await y.d.stop();
});

test('wake-fail on demand: a request for the sleeping model stops it (wake failed) and starts it fresh', async () => {
    const y = await gpuDaemon({
        models: { w: { flavor: 'vllm', vram: '10GiB', eviction: { weights: 'offload' }, extra: '--fail wake-fail' } },
    });
    let fresh = [];
    try {
        assert.equal((await chat(y, 'w', { max_tokens: 1 })).status, 200);
        await yardOk(y.dir, ['sleep', 'w']);
        const old = (await entry(y.dir, 'w')).pid;

        const r = await chat(y, 'w', { max_tokens: 2 });
        console.log(`request after the failed wake: ${r.status} ${r.body}`);

        // The old process is gone: the failed wake escalated to a stop.
        await waitFor(() => !pidAlive(old), { timeoutMs: 10000, what: `w's old engine ${old} to exit` });
        const ev = await modelEvents(y.dir, 'w');
        const esc = ev.find((x) => x.from === 'sleeping' && x.to === 'stopping');
        assert.ok(esc, `no sleeping -> stopping: ${JSON.stringify(ev)}`);
        assert.match(esc.reason, /wake failed/);
        const stopped = ev.find((x) => x.from === 'stopping' && x.to === 'stopped');
        assert.ok(stopped && stopped.id > esc.id);
        // The waiting request made yard start it again, in a new process.
        const starts = transitions(ev, 'stopped', 'starting');
        assert.equal(starts.length, 2, JSON.stringify(ev));
        assert.ok(starts[1].id > stopped.id);
        await waitState(y.dir, 'w', 'ready', 15000);
        fresh = strayEngines('w');
        assert.equal(fresh.length, 1, `engines of w: ${fresh}`);
        assert.notEqual(fresh[0], old);
    } finally {
        await killStrays(y.dir, 'w'); // see the next test
    }
    await y.d.stop();
});

test(
    'wake-fail on demand: the fresh start serves the waiting request and is tracked (pid, port, stop)',
    async () => {
        const y = await gpuDaemon({
            models: {
                w: { flavor: 'vllm', vram: '10GiB', eviction: { weights: 'offload' }, extra: '--fail wake-fail' },
            },
        });
        try {
            assert.equal((await chat(y, 'w', { max_tokens: 1 })).status, 200);
            await yardOk(y.dir, ['sleep', 'w']);
            const old = (await entry(y.dir, 'w')).pid;
            const r = await chat(y, 'w', { max_tokens: 2 });
            assert.equal(r.status, 200, r.body);
            assert.equal(JSON.parse(r.body).choices[0].message.content, mockText(2));
            const e = await entry(y.dir, 'w');
            assert.equal(e.state, 'ready');
            assert.ok(e.pid && e.pid !== old && pidAlive(e.pid), JSON.stringify(e));
            assert.ok(e.port, JSON.stringify(e));
            assert.ok(!pidAlive(old));
            await yardOk(y.dir, ['stop', 'w']);
            await waitFor(() => !pidAlive(e.pid), { timeoutMs: 10000, what: 'the fresh engine to stop' });
            assert.deepEqual(strayEngines('w'), [], 'an engine of w outlived yard stop');
        } finally {
            await killStrays(y.dir, 'w');
        }
        await y.d.stop();
    }
);

// ---------------------------------------------------------------- streaming

test('a stream for a sleeping model gets `: loading` comments at once, then the answer', async () => {
    const y = await gpuDaemon({
        models: {
            a: { flavor: 'vllm', eviction: { weights: 'offload' }, load: '4s' },
        },
    });
    assert.equal((await chat(y, 'a', { max_tokens: 1 })).status, 200);
    const pid = (await entry(y.dir, 'a')).pid;
    await yardOk(y.dir, ['sleep', 'a']);

    const s = await openStream(`${y.base}/v1/chat/completions`, chatBody('a', { stream: true, max_tokens: 4 }));
    assert.equal(s.status, 200);
    assert.match(String(s.headers['content-type']), /text\/event-stream/);
    const done = await withTimeout(s.done, 20000);
    assert.ok(done && done.complete, `stream did not end properly: ${done && done.text}`);
    const text = done.text;
    const iLoading = text.indexOf(': loading a');
    const iData = text.indexOf('data:');
    assert.ok(iLoading >= 0, `no ': loading a' comment:\n${text}`);
    assert.ok(iData > iLoading, `data before the loading comment:\n${text}`);
    const ev = parseSSE(text);
    assert.equal(chatStreamText(ev), mockText(4));
    assert.equal(ev[ev.length - 1].data, '[DONE]');

    const e = await entry(y.dir, 'a');
    assert.equal(e.state, 'ready');
    assert.equal(e.pid, pid);
    await y.d.stop();
});
