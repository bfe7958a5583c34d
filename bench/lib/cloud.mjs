// Section "cloud": a model on a machine rented from the Vast.ai API stand-in
// (tests/e2e/lib/vast-standin.mjs: the API on loopback, each machine a real
// sshd). A round is one daemon in a fresh state dir and one stand-in with two
// offers: the cheaper one's instance reports an OCI runtime error in its
// status_msg (fatal: yard destroys it and rents the next), the other runs.
// The first request for the model rents, and is answered by the engine on the
// second machine. The stand-in stamps (CLOCK_MONOTONIC ns, this process's
// clock) each instance's first entry into an actual_status, the first GET that
// answered each, and the first DELETE; the mock engine stamps its start and its
// readiness; yard's events arrive on an `events` follower (same clock).
//
//   poll gap    = instance `running` -> the first GET answered `running`
//                 (yard's wait for its next read, the poll being 1 s)
//   to ready    = that answer -> yard's `ready` event of the model, minus the
//                 engine's own start -> ready (a 500 ms load): what yard does
//                 after the API reported running (ssh probe, nvidia-smi, the
//                 pod runner's ssh to start the engine, the readiness probe
//                 and the port's owner), and any wait
//   bad host    = the OCI error's first instant in the API -> yard's DELETE of
//                 that instance reaching the stand-in
//   lost        = the serving machine's instance exits (its sshd and engine
//                 killed, the API saying `exited`) -> yard's DELETE of it
//
// Skipped with the reason where sshd cannot run (not root, not installed).
import fs from 'node:fs';
import path from 'node:path';
import {
    YARD_BIN,
    tmpdir,
    run,
    startYard,
    followEvents,
    timedRequest,
    waitFor,
    mockCmd,
    summary,
    put,
    round,
    log,
} from './util.mjs';

const POLL_MS = 1000; // src/host/internal.h HOST__RENT_POLL_MS: a starting instance is read every second

// The engine's load: what yard sets up beside a loading engine (the forward to
// its port, the first probes) overlaps it, as with any real engine.
const LOAD_MS = 500;

const ns = (x) => (x == null ? null : Number(x));

/** "start NS" of the mock's --stamps file: its last start. */
function engineStart(file) {
    const lines = fs.readFileSync(file, 'utf8').split('\n');
    const l = lines.filter((x) => x.startsWith('start ')).pop();
    return l ? Number(l.split(' ')[1]) : null;
}

async function oneRound(lib, i, dir) {
    // the instance's phases last 100..600 ms, different each round, so the
    // instant it runs falls anywhere between two of yard's reads
    const jitter = () => 100 + Math.floor(Math.random() * 500);
    const bad = 1000 + 2 * i;
    const good = bad + 1;
    const s = await lib.startVastStandin({
        offers: [
            { id: bad, machine_id: 9000 + bad, dph_total: 0.3, gpu_name: 'RTX 4090', gpu_ram: 24564 },
            { id: good, machine_id: 9000 + good, dph_total: 0.4, gpu_name: 'RTX 4090', gpu_ram: 24564 },
        ],
        timing: { created: jitter(), loading: jitter() },
    });
    let y = null;
    let ev = null;
    try {
        await s.script({ kind: 'oci_error', offer: bad });
        const readyStamp = path.join(dir, `ready-${i}`);
        const stamps = path.join(dir, `stamps-${i}`);
        process.env.BENCH_VAST_API_KEY = s.apiKey;
        const top =
            'clouds:\n' +
            '  vast:\n' +
            '    provider: vast\n' +
            '    api_key: ${env.BENCH_VAST_API_KEY}\n' +
            `    url: ${s.url}\n` +
            '    max_price: 1.5\n' +
            '    image: vllm/vllm-openai:latest\n' +
            `    ssh_key: ${s.clientKey.path}\n`;
        y = await startYard({
            top,
            models: {
                c: {
                    engine: 'vllm',
                    hosts: ['vast'],
                    cmd: mockCmd('vllm', `--load-time ${LOAD_MS}ms --stamps ${stamps} --ready-stamp ${readyStamp}`),
                },
            },
        });
        const seen = {}; // first arrival ns of: the model's `ready`, the host's `ready`
        const evl = followEvents(y.stateDir, (e, at) => {
            if (e.model === 'c' && e.to === 'ready' && e.from !== 'ready' && e.host && !seen.model) seen.model = at;
            if (e.from === 'ready' && e.to === 'ready' && !seen.host) seen.host = at;
        });
        ev = evl;
        await new Promise((r) => setTimeout(r, 100)); // the follower's backlog read
        const r = await timedRequest(
            y.port,
            'POST',
            '/v1/chat/completions',
            { model: 'c', messages: [{ role: 'user', content: 'hi' }], max_tokens: 1 },
            { timeoutMs: 60000 }
        );
        if (r.status !== 200) throw new Error(`the request that rents: status ${r.status}: ${r.body.slice(0, 300)}`);
        await waitFor(() => seen.model && fs.existsSync(readyStamp), {
            timeoutMs: 5000,
            what: "the model's ready event and the engine's stamp",
        });
        const insts = [...s.state.instances.values()];
        const ib = insts.find((x) => x.offer.id === bad);
        const ig = insts.find((x) => x.offer.id === good);
        if (!ib || !ig) throw new Error(`expected an instance of each offer, got offers ${insts.map((x) => x.offer.id)}`);
        if (!ib.destroyed) throw new Error(`the instance with the OCI error (${ib.id}) was not destroyed`);
        const running = ns(ig.stamps.entered.running);
        const answered = ns(ig.stamps.answered.running);
        const engStart = engineStart(stamps);
        const engReady = Number(fs.readFileSync(readyStamp, 'utf8').trim());
        const engineOwn = engReady - engStart;
        const out = {
            poll_gap_ms: (answered - running) / 1e6,
            to_ready_ms: (seen.model - answered - engineOwn) / 1e6,
            bad_host_ms: (ns(ib.stamps.destroy) - ns(ib.stamps.entered.created)) / 1e6,
            engine_own_ms: engineOwn / 1e6,
            // parts of to_ready: up to the host ready, up to the engine's start, after its readiness
            host_ms: seen.host ? (seen.host - answered) / 1e6 : null,
            launch_ms: seen.host ? (engStart - seen.host) / 1e6 : null,
            detect_ms: (seen.model - engReady) / 1e6,
        };
        // one ssh login to the machine, as yard's first (a fresh connection, no master)
        const t = process.hrtime.bigint();
        const ssh = await run('sh', ['-c', `${s.sshCommand(ig.id)} -o StrictHostKeyChecking=accept-new true`], {
            timeoutMs: 20000,
        });
        if (ssh.code === 0) out.ssh_login_ms = Number(process.hrtime.bigint() - t) / 1e6;
        // the serving machine's instance exits (its sshd and engine killed, the API saying `exited`)
        await s.script({ kind: 'exited', instance: ig.id });
        await waitFor(() => ig.stamps.destroy, { timeoutMs: 30000, what: 'the exited instance destroyed' });
        out.lost_ms = (ns(ig.stamps.destroy) - ns(ig.stamps.entered.exited)) / 1e6;
        log(
            `cloud round ${i + 1}: poll gap ${round(out.poll_gap_ms)} ms, running answered -> ready ` +
                `${round(out.to_ready_ms)} ms over the engine's ${round(out.engine_own_ms)} ms ` +
                `(host ready ${round(out.host_ms)}, engine started ${round(out.launch_ms)} after, ` +
                `ready seen ${round(out.detect_ms)} after the engine), bad host abandoned ${round(out.bad_host_ms)} ms; ` +
                `one ssh login ${round(out.ssh_login_ms)} ms; a serving instance exited -> destroyed ${round(out.lost_ms)} ms`
        );
        const name = (await run(YARD_BIN, ['cloud', 'ls', '--json'], { env: { YARD_STATE_DIR: y.stateDir } })).stdout;
        for (const row of JSON.parse(name || '[]'))
            await run(YARD_BIN, ['cloud', 'release', row.name], { env: { YARD_STATE_DIR: y.stateDir } });
        return out;
    } finally {
        if (ev) ev.close();
        if (y) await y.proc.stop();
        await s.stop();
    }
}

export async function runCloud(p) {
    const sshd = await import('../../tests/e2e/lib/sshd.mjs');
    const why = sshd.sshdSkipReason();
    if (why) return { skipped: `no sshd for the stand-in's machines: ${why}` };
    const lib = await import('../../tests/e2e/lib/vast-standin.mjs');
    const dir = tmpdir('yb-cloud-');
    const rounds = [];
    for (let i = 0; i < p.rounds; i++) rounds.push(await oneRound(lib, i, dir));
    const out = { rounds: p.rounds, poll_ms: POLL_MS, load_ms: LOAD_MS };
    const keys = ['poll_gap_ms', 'to_ready_ms', 'bad_host_ms', 'engine_own_ms', 'host_ms', 'launch_ms', 'detect_ms', 'ssh_login_ms', 'lost_ms'];
    for (const k of keys)
        put(out, k, summary(rounds.map((r) => r[k])));
    out.each = rounds.map((r) => Object.fromEntries(Object.entries(r).map(([k, v]) => [k, round(v)])));
    return out;
}
