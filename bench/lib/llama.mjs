// Section "llama": a switch between two real llama-server engines through yard,
// against the same engine started without yard. Two models share one exclusive
// group, so each request for the other one stops the first and starts the second.
//
//   direct = spawn of llama-server -> first byte of a 1-token completion sent as
//            soon as its /health answers 200 (polled every 2 ms)
//   switch = request sent to yard -> its first byte, the other model loaded
//   overhead = switch - direct (median of each): stopping the other engine,
//            deciding, spawning, readiness detection and forwarding
//
// yard's own account of each switch (its event "switched from ... stop S s,
// start S s") splits it: the stop is mostly llama-server's own exit.
//
// The engine's own clock (the elapsed time llama-server prints on its
// "listening on" line) is reported beside them. The binary comes from
// scripts/llama-server.sh --cached (or YARD_LLAMA_SERVER); without one the section
// is skipped with the command that builds it.
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import {
    ROOT,
    YARD_BIN,
    tmpdir,
    start,
    run,
    freePort,
    waitFor,
    timedRequest,
    startYard,
    summary,
    put,
    round,
    log,
    monoNs,
} from './util.mjs';

const MODEL = path.join(ROOT, 'tests/e2e/fixtures/stories260K.gguf');
const ARGS = ['--host', '127.0.0.1', '-np', '1', '-c', '256', '-t', '1'];
const ONE = { prompt: 'Once upon a time', max_tokens: 1, temperature: 0 };

function llamaServer() {
    const r = spawnSync(path.join(ROOT, 'scripts/llama-server.sh'), ['--cached'], { encoding: 'utf8' });
    return r.status === 0 ? r.stdout.trim() : null;
}

async function healthOk(port) {
    const r = await timedRequest(port, 'GET', '/health', null, { timeoutMs: 2000 }).catch(() => null);
    return r && r.status === 200;
}

/** llama-server's elapsed-time prefix ("M.SS.mmm.uuu ") of the last start's line with `what`, in ms. */
function engineClockMs(text, what) {
    const lines = text.split('\n');
    const from = lines.findLastIndex((l) => l.includes('llama_server: initializing') || l.includes('build:'));
    const line = lines.slice(Math.max(0, from)).find((l) => l.includes(what)) ?? '';
    const m = line.match(/(\d+)\.(\d\d)\.(\d{3})\.(\d{3}) /);
    return m ? Number(m[1]) * 60000 + Number(m[2]) * 1000 + Number(m[3]) + Number(m[4]) / 1000 : null;
}

async function directOnce(bin, dir, i) {
    const port = await freePort();
    const logPath = path.join(dir, `direct-${i}.log`);
    const t0 = monoNs();
    const proc = start(bin, ['-m', MODEL, '--port', String(port), '--alias', 'direct', ...ARGS], { logPath });
    try {
        await waitFor(
            async () => {
                if (!proc.alive()) throw new Error(`llama-server exited: ${fs.readFileSync(logPath, 'utf8').slice(-500)}`);
                return healthOk(port);
            },
            { timeoutMs: 60000, intervalMs: 2, what: 'the direct llama-server' }
        );
        const r = await timedRequest(port, 'POST', '/v1/completions', { model: 'direct', ...ONE });
        if (r.status !== 200) throw new Error(`direct completion: ${r.status} ${r.body.slice(0, 200)}`);
        return {
            first_byte_ms: (r.tFirstByteNs - t0) / 1e6,
            listening_ms: engineClockMs(fs.readFileSync(logPath, 'utf8'), 'listening on'),
        };
    } finally {
        await proc.stop();
    }
}

export async function runLlama(p) {
    const bin = llamaServer();
    if (!bin)
        return { skipped: 'no llama-server built: scripts/llama-server.sh builds it once (10-15 min on 2 cores)' };
    const dir = tmpdir('yb-llama-');
    const direct = [];
    for (let i = 0; i < p.rounds; i++) direct.push(await directOnce(bin, dir, i));

    const cmd = `${bin} -m ${MODEL} --port \${PORT} --alias \${NAME} ${ARGS.join(' ')}`;
    const y = await startYard({
        models: { a: { engine: 'llamacpp', cmd }, b: { engine: 'llamacpp', cmd } },
        top: `groups: ${JSON.stringify({ pair: { exclusive: true, members: ['a', 'b'] } })}\n`,
    });
    const ask = async (model) => {
        const r = await timedRequest(y.port, 'POST', '/v1/completions', { model, ...ONE });
        if (r.status !== 200) throw new Error(`switch to ${model}: status ${r.status}: ${r.body.slice(0, 300)}`);
        return (r.tFirstByteNs - r.tSendNs) / 1e6;
    };
    const engineLog = async (model) => {
        const r = await run(YARD_BIN, ['logs', model, '-n', '200'], { env: { YARD_STATE_DIR: y.stateDir } });
        return r.code === 0 ? r.stdout : '';
    };
    /* yard's own account of the last switch to model: "switched from X in S s: drain S s, stop S s, start S s" */
    const yardAccount = async (model) => {
        const r = await run(YARD_BIN, ['events', '--json', '-n', '20', model], { env: { YARD_STATE_DIR: y.stateDir } });
        const why = r.stdout
            .split('\n')
            .filter((l) => l.trim())
            .map((l) => JSON.parse(l).reason || '')
            .filter((x) => x.startsWith('switched from '))
            .pop();
        const at = (what) => Number(why?.match(new RegExp(`${what} ([0-9.]+) s`))?.[1]) * 1000;
        return { stop: at('stop'), start: at('start') };
    };
    await ask('a');
    const switches = [];
    const listening = [];
    const stops = [];
    const starts = [];
    for (let i = 0; i < p.rounds; i++) {
        for (const m of ['b', 'a']) {
            const ms = await ask(m);
            switches.push(ms);
            const own = engineClockMs(await engineLog(m), 'listening on');
            if (own != null) listening.push(own);
            const acct = await yardAccount(m);
            stops.push(acct.stop);
            starts.push(acct.start);
            log(`llama switch to ${m}: ${round(ms, 1)} ms (the engine's own clock at listening: ${round(own, 1)} ms)`);
        }
    }
    const warm = [];
    for (let i = 0; i < p.rounds; i++) warm.push(await ask('a'));
    await y.proc.stop();

    const out = { rounds: p.rounds, binary: bin };
    put(out, 'switch_ms', summary(switches));
    put(out, 'direct_first_byte_ms', summary(direct.map((d) => d.first_byte_ms)));
    put(out, 'engine_listening_ms', summary(listening.concat(direct.map((d) => d.listening_ms).filter((x) => x != null))));
    put(out, 'warm_ms', summary(warm));
    put(out, 'yard_stop_ms', summary(stops));
    put(out, 'yard_start_ms', summary(starts));
    out.overhead_ms = round(out.switch_ms - out.direct_first_byte_ms, 1);
    return out;
}
