// Section "stream": concurrent SSE streams (T tokens each at a set rate)
// through yard, and the same straight to an identical engine, interleaved,
// at two sizes: BENCH_STREAMS (1,000) and BENCH_STREAMS_FEW (100), each with
// a budget of its own for the latency yard adds to a chunk.
// build/bench/stream_client checks order and counts and measures, for every
// chunk, engine write -> client read (the mock stamps each chunk with
// --stamp-chunks). Yard's RSS is sampled while the large set runs.
import path from 'node:path';
import {
    HELPER_DIR,
    MOCK_BIN,
    start,
    run,
    tmpdir,
    freePort,
    tcpAccepts,
    waitFor,
    startYard,
    admin,
    mockCmd,
    memKiB,
    cpuMs,
    summary,
    put,
    round,
    rotate,
    sleep,
    log,
} from './util.mjs';

async function clientRun(port, set, rate) {
    const args = [
        '--port', String(port),
        '--model', 's',
        '--streams', String(set.streams),
        '--tokens', String(set.tokens),
        '--ramp-ms', String(set.rampMs),
        '--timeout-s', String(Math.ceil(set.tokens / rate) + 60),
    ];
    const r = await run(path.join(HELPER_DIR, 'stream_client'), args, { timeoutMs: (set.tokens / rate + 90) * 1000 });
    const line = r.stdout.trim().split('\n').pop();
    if (r.code !== 0 || !line || !line.startsWith('{')) throw new Error(`stream_client failed (${r.code}): ${r.stderr}`);
    const o = JSON.parse(line);
    if (r.stderr.trim()) log(`stream_client: ${r.stderr.trim()}`);
    return o;
}

const sum = (arr, k) => arr.reduce((a, x) => a + x[k], 0);

/** The figures of one set of streams: counts over the yard runs, latency yard minus direct per round. */
function figures(set, res, cpu) {
    const out = {
        streams: set.streams,
        tokens: set.tokens,
        ramp_ms: set.rampMs,
        lost: sum(res.yard, 'lost'),
        reordered: sum(res.yard, 'reordered'),
        duplicated: sum(res.yard, 'dup'),
        failed_streams: sum(res.yard, 'errors'),
        chunks: sum(res.yard, 'chunks'),
    };
    // added per-chunk latency: yard's percentile minus the direct one, per round
    const pair = (k) => summary(res.yard.map((o, i) => o[k] - res.direct[i][k]));
    put(out, 'p50_us', pair('p50_us'), 0);
    put(out, 'p99_us', pair('p99_us'), 0);
    put(out, 'cpu_us_per_chunk', summary(cpu.map((c) => (c.ms * 1000) / Math.max(1, c.chunks))), 2);
    for (const t of ['yard', 'direct']) {
        const o = {};
        put(o, 'p50_us', summary(res[t].map((x) => x.p50_us)), 0);
        put(o, 'p99_us', summary(res[t].map((x) => x.p99_us)), 0);
        put(o, 'max_us', summary(res[t].map((x) => x.max_us)), 0);
        o.lost = sum(res[t], 'lost');
        o.reordered = sum(res[t], 'reordered');
        o.failed_streams = sum(res[t], 'errors');
        o.completed = sum(res[t], 'completed');
        o.wall_ms = res[t].map((x) => round(x.wall_ms, 0));
        out[t] = o;
    }
    return out;
}

export async function runStream(p) {
    const engineArgs = `--load-time 0s --tokens-per-sec ${p.rate} --stamp-chunks`;
    const y = await startYard({ models: { s: { engine: 'vllm', cmd: mockCmd('vllm', engineArgs) } } });
    await admin(y.stateDir, { cmd: 'start', model: 's', wait: true });
    const dir = tmpdir('yb-sdirect-');
    const enginePort = await freePort();
    const engine = start(
        MOCK_BIN,
        ['--flavor', 'vllm', '--port', String(enginePort), '--name', 's', ...engineArgs.split(' ')],
        { logPath: path.join(dir, 'engine.log') }
    );
    await waitFor(() => tcpAccepts(enginePort), { what: 'the direct mock engine' });

    // The two sets: the few streams open at the same pace as the many
    // (streams per ms of ramp), so each set starts as fast as the other.
    const sets = {
        many: { streams: p.streams, tokens: p.tokens, rampMs: p.rampMs },
        few: {
            streams: p.fewStreams,
            tokens: p.fewTokens,
            rampMs: Math.max(1, Math.round((p.rampMs * p.fewStreams) / p.streams)),
        },
    };
    const res = { many: { direct: [], yard: [] }, few: { direct: [], yard: [] } };
    const cpu = { many: [], few: [] };

    await sleep(500);
    const base = memKiB(y.proc.pid);
    const rss = [];
    for (let r = 0; r < p.rounds; r++) {
        for (const k of rotate(['many', 'few'], r)) {
            const set = sets[k];
            const order = r % 2 ? ['yard', 'direct'] : ['direct', 'yard'];
            for (const t of order) {
                let peak = 0;
                let sampler = null;
                const cpu0 = cpuMs(y.proc.pid);
                if (t === 'yard' && k === 'many') {
                    sampler = setInterval(() => {
                        const m = memKiB(y.proc.pid);
                        if (m && m.rss > peak) peak = m.rss;
                    }, 50);
                }
                const o = await clientRun(t === 'yard' ? y.port : enginePort, set, p.rate);
                if (sampler) {
                    clearInterval(sampler);
                    rss.push(peak);
                }
                if (t === 'yard') cpu[k].push({ ms: cpuMs(y.proc.pid) - cpu0, chunks: o.chunks });
                res[k][t].push(o);
                log(
                    `stream round ${r + 1}/${p.rounds} ${set.streams} streams ${t}: ` +
                        `${o.completed}/${o.streams} complete, lost ${o.lost}, reordered ${o.reordered}, ` +
                        `chunk latency p50 ${o.p50_us} us p99 ${o.p99_us} us` +
                        (sampler ? `, yard RSS peak ${peak} KiB` : '')
                );
            }
        }
    }
    const after = memKiB(y.proc.pid);
    await engine.stop();
    await y.proc.stop();

    // The many streams' figures at the top (the RSS budget is theirs), the
    // few streams' under `few`.
    const out = { ...figures(sets.many, res.many, cpu.many), tokens_per_sec: p.rate, rounds: p.rounds };
    put(out, 'rss_per_stream_kib', summary(rss.map((x) => (x - base.rss) / p.streams)), 2);
    out.rss_idle_kib = base.rss;
    put(out, 'rss_peak_kib', summary(rss), 0);
    out.rss_after_kib = after ? after.rss : null;
    out.few = figures(sets.few, res.few, cpu.few);
    return out;
}
