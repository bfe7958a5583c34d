// Section "replicas": how well yard balances one model's requests over its
// replicas. Three copies of one vLLM mock model run in one daemon: r1
// (replicas: 1), r2 (replicas: 2) and r4 (replicas: 4), all with
// `concurrency: 1`. The engine answers a request of 10 tokens in
// BENCH_REPLICA_MS (its --tokens-per-sec is set so), so one
// replica serves at most 1000 / BENCH_REPLICA_MS req/s whatever the CPU, and
// N replicas N times that: the ratio
//
//   ratio_N = req/s through rN / (N x req/s through r1)
//
// measures yard's dispatch (the gap it leaves between one request's end and
// the next one's start on a replica, and any replica left idle while
// requests wait), not the 2 cores. The same closed-loop client load
// (BENCH_REPLICA_CLIENTS keep-alive connections, each sending its next
// request when the last is answered) goes to each model, interleaved round
// by round with the order rotated. The X-Yard-Replica header of every answer
// gives each replica's share. Every replica is started and ready before the
// first round: load is driven at each model (scale_after is low) until `ps`
// shows all its rows ready.
//
// Then one connection to l1 (replicas: 1) and l2 (replicas: 2, both
// ready), whose engines answer at once: the latency a model with replicas
// adds over one without (at one connection both answer on replica 0, so
// this is the cost of choosing among replicas, not of a second hop).
import http from 'node:http';
import { startYard, mockCmd, ps, summary, put, round, rotate, log, monoNs } from './util.mjs';

const COUNTS = [1, 2, 4];
const name = (n) => `r${n}`;

/**
 * Closed-loop load: `clients` connections each posting its next request as
 * soon as the last is answered, for `seconds`. Resolves { rps, requests,
 * errors, by_replica (answers per X-Yard-Replica value), lat_us (per
 * request, sorted) }. rps counts the answers that ended inside the window,
 * over the window, so requests still in flight at its end do not count.
 */
async function load(port, model, { clients, seconds, maxTokens, warmMs = 0 }) {
    const agent = new http.Agent({ keepAlive: true, maxSockets: clients });
    const body = JSON.stringify({
        model,
        max_tokens: maxTokens,
        messages: [{ role: 'user', content: 'Say hello to the benchmark.' }],
    });
    const t0 = monoNs() + warmMs * 1e6;
    const tEnd = t0 + seconds * 1e9;
    const byReplica = {};
    const lat = [];
    let done = 0;
    let errors = 0;
    let firstError = null;
    const one = () =>
        new Promise((resolve) => {
            const sent = monoNs();
            const req = http.request(
                {
                    host: '127.0.0.1',
                    port,
                    method: 'POST',
                    path: '/v1/chat/completions',
                    agent,
                    headers: { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) },
                },
                (res) => {
                    res.resume();
                    res.on('end', () => {
                        const at = monoNs();
                        if (res.statusCode !== 200) {
                            errors++;
                            firstError ??= `status ${res.statusCode}`;
                        } else if (at >= t0 && at <= tEnd) {
                            done++;
                            lat.push((at - sent) / 1e3);
                            const r = res.headers['x-yard-replica'] ?? 'none';
                            byReplica[r] = (byReplica[r] || 0) + 1;
                        }
                        resolve();
                    });
                    res.on('error', (e) => {
                        errors++;
                        firstError ??= e.message;
                        resolve();
                    });
                }
            );
            req.on('error', (e) => {
                errors++;
                firstError ??= e.message;
                resolve();
            });
            req.end(body);
        });
    const client = async () => {
        while (monoNs() < tEnd && errors < 100) await one();
    };
    await Promise.all(Array.from({ length: clients }, client));
    agent.destroy();
    if (errors >= 100) throw new Error(`${model}: ${errors} failed requests (first: ${firstError})`);
    lat.sort((a, b) => a - b);
    return { rps: done / seconds, requests: done, errors, by_replica: byReplica, lat_us: lat };
}

/** The p-th percentile of an already sorted array (null when empty). */
const pct = (sorted, p) =>
    sorted.length ? sorted[Math.min(sorted.length - 1, Math.round((p / 100) * (sorted.length - 1)))] : null;

/** Rows of model in `ps` that are ready. */
async function readyReplicas(stateDir, model) {
    return (await ps(stateDir)).filter((x) => x.name === model && x.state === 'ready').length;
}

export async function runReplicas(p) {
    const tokens = p.tokens;
    const rate = (tokens * 1000) / p.requestMs;
    const models = {};
    for (const n of COUNTS) {
        models[name(n)] = {
            engine: 'vllm',
            cmd: mockCmd('vllm', `--load-time 0s --tokens-per-sec ${rate}`),
            replicas: n,
            concurrency: 1,
            scale_after: '10ms',
        };
    }
    // For the latency pair, engines answering at once: the paced ones' timer
    // ticks would be most of what is measured. Their requests wait a fraction
    // of a millisecond, so l2's second replica starts on any wait with its
    // first busy (scale_after 0s): with 1ms, a proxy quick enough never let a
    // request wait that long at a scheduler tick, and the warm-up never ended.
    for (const n of [1, 2]) {
        models[`l${n}`] = {
            engine: 'vllm',
            cmd: mockCmd('vllm', '--load-time 0s --tokens-per-sec 0'),
            replicas: n,
            concurrency: 1,
            scale_after: '0s',
        };
    }
    const y = await startYard({ models });

    // Every replica up and ready before measuring: load at each model until
    // ps shows all its rows ready (a replica starts once the queue has waited
    // scale_after with every ready replica busy).
    const warm = [...COUNTS.map((n) => [name(n), n]), ['l1', 1], ['l2', 2]];
    for (const [m, n] of warm) {
        const t0 = Date.now();
        for (;;) {
            await load(y.port, m, { clients: p.clients, seconds: 0.5, maxTokens: tokens });
            if ((await readyReplicas(y.stateDir, m)) === n) break;
            if (Date.now() - t0 > 30000) throw new Error(
                    `${m}: ${n} replicas not all ready after 30 s of load; ` +
                        'rerun with BENCH_KEEP=1 and read the daemon log'
                );
        }
        log(`replicas: ${m} has ${n} ready replica(s) after ${Date.now() - t0} ms`);
    }

    const tput = Object.fromEntries(COUNTS.map((n) => [n, []]));
    const lat = { 1: [], 2: [] };
    for (let r = 0; r < p.rounds; r++) {
        for (const n of rotate(COUNTS, r)) {
            const opts = { clients: p.clients, seconds: p.seconds, maxTokens: tokens, warmMs: 200 };
            tput[n].push(await load(y.port, name(n), opts));
        }
        for (const n of rotate([1, 2], r)) {
            lat[n].push(await load(y.port, `l${n}`, { clients: 1, seconds: p.latSeconds, maxTokens: tokens }));
        }
        log(
            `replicas round ${r + 1}/${p.rounds}: ` +
                COUNTS.map((n) => `${n}: ${round(tput[n][r].rps, 1)} req/s ${JSON.stringify(tput[n][r].by_replica)}`)
                    .join(', ') +
                `; 1 conn p50 ${Math.round(pct(lat[1][r].lat_us, 50))} us (1 replica), ` +
                `${Math.round(pct(lat[2][r].lat_us, 50))} us (2 replicas)`
        );
    }
    // ps once more: a replica that failed and restarted meanwhile would make
    // the figures mean less
    const ready = {};
    for (const n of COUNTS) ready[n] = await readyReplicas(y.stateDir, name(n));
    const latReady = await readyReplicas(y.stateDir, 'l2');
    await y.proc.stop();

    const out = {
        request_ms: p.requestMs,
        tokens,
        clients: p.clients,
        seconds: p.seconds,
        latency_seconds: p.latSeconds,
        rounds: p.rounds,
        one_replica_max_rps: round(1000 / p.requestMs, 1),
    };
    for (const n of COUNTS) {
        const o = {};
        put(o, 'rps', summary(tput[n].map((x) => x.rps)), 1);
        if (n > 1) put(o, 'ratio', summary(tput[n].map((x, i) => x.rps / (n * tput[1][i].rps))), 3);
        // every replica, those that answered nothing included
        const by = Object.fromEntries(Array.from({ length: n }, (_, i) => [String(i), 0]));
        let all = 0;
        for (const x of tput[n]) {
            for (const [k, v] of Object.entries(x.by_replica)) {
                by[k] = (by[k] || 0) + v;
                all += v;
            }
        }
        o.share = Object.fromEntries(
            Object.keys(by)
                .sort((a, b) => Number(a) - Number(b))
                .map((k) => [k, round(by[k] / Math.max(1, all), 3)])
        );
        put(o, 'loaded_p50_us', summary(tput[n].map((x) => pct(x.lat_us, 50))), 0);
        put(o, 'loaded_p99_us', summary(tput[n].map((x) => pct(x.lat_us, 99))), 0);
        o.requests = tput[n].reduce((a, x) => a + x.requests, 0);
        o.errors = tput[n].reduce((a, x) => a + x.errors, 0);
        o.ready_at_end = ready[n];
        o.round_rps = tput[n].map((x) => round(x.rps, 1));
        out[`x${n}`] = o;
    }
    // one connection, engines answering at once: l1 (1 replica), l2 (2)
    out.latency = { ready_at_end: latReady };
    for (const n of [1, 2]) {
        const o = {};
        put(o, 'p50_us', summary(lat[n].map((x) => pct(x.lat_us, 50))), 0);
        put(o, 'p99_us', summary(lat[n].map((x) => pct(x.lat_us, 99))), 0);
        out.latency[`x${n}`] = o;
    }
    const lpair = (q) => summary(lat[2].map((x, i) => pct(x.lat_us, q) - pct(lat[1][i].lat_us, q)));
    put(out, 'added_p50_us', lpair(50), 0);
    put(out, 'added_p99_us', lpair(99), 0);
    // the budget is judged on the worst N
    out.ratio = Math.min(...COUNTS.filter((n) => n > 1).map((n) => out[`x${n}`].ratio));
    return out;
}
