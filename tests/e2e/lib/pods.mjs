// Helpers for e2e tests that run models on pods: real sshd "pods" on this
// machine (lib/sshd.mjs), one of them reached through a proxy the test cuts and
// mends (lib/proxy.mjs), a config writer, and what `yard ps --json` says of a
// model.

import fs from 'node:fs';
import path from 'node:path';
import * as h from './harness.mjs';
import { startSshd } from './sshd.mjs';
import { countingProxy } from './proxy.mjs';

export const FIXTURES = path.join(h.YARD_SRC_DIR, 'tests/e2e/fixtures');

/**
 * A pod named name: sshd with a home of its own under dir, whose sessions find
 * the fixtures first in PATH (the stand-in nvidia-smi) and get env besides
 * (e.g. YARD_FAKE_GPUS: the GPUs that nvidia-smi lists there).
 */
export async function startPod(dir, name, env = {}) {
    const home = path.join(dir, `${name}-home`);
    fs.mkdirSync(home, { recursive: true });
    return startSshd({
        keyEnv: { PATH: `${FIXTURES}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin`, HOME: home, ...env },
    });
}

/**
 * A proxy in front of sshd whose port is pinned in sshd's known_hosts too:
 * a pod added with sshd.cmdForPort(proxy.port) is cut by proxy.break() and
 * mended by proxy.mend().
 */
export async function proxied(sshd) {
    const proxy = await countingProxy(sshd.port);
    const kh = path.join(sshd.dir, 'known_hosts');
    const pinned = fs.readFileSync(kh, 'utf8').split('\n')[0].replace(/^\S+/, '');
    fs.appendFileSync(kh, `[127.0.0.1]:${proxy.port}${pinned}\n`);
    return proxy;
}

/** The mock engine's command line for a model (vllm flavor, a short load). */
export const podMock = (extra = '') =>
    `${h.MOCK_ENGINE_BIN} --flavor vllm --port \${PORT} --name \${NAME} --load-time 100ms${extra}`;

/** Writes DIR/yard.yaml: listen on port, engines from base, models as JSON, top lines before. */
export function podConfig(dir, port, base, models, top = '') {
    let yaml = `listen: 127.0.0.1:${port}\nstart_port: ${base}\n${top}` +
        `defaults: { stop_timeout: 2s, startup_timeout: 30s }\nmodels:\n`;
    for (const [name, body] of Object.entries(models)) yaml += `  ${name}: ${JSON.stringify(body)}\n`;
    return h.writeConfig(dir, yaml);
}

/** The `yard ps --json` rows of model name, by replica. */
export const rows = (dir, name) =>
    h.yardJson(['ps', '--json'], { stateDir: dir })
        .then((r) => r.filter((x) => x.name === name).sort((a, b) => a.replica - b.replica));

/** Where the ready instances of model run: their hosts, sorted. */
export const readyHosts = async (dir, model) =>
    (await rows(dir, model)).filter((r) => r.state === 'ready').map((r) => r.host).sort();

/** `yard events` as text. */
export const eventsText = async (dir) => (await h.yard(['events'], { stateDir: dir })).stdout;

/** One completion of max_tokens for model through yard on port: {status, headers, body}. */
export function askCompletion(port, model, maxTokens = 2) {
    return h.httpPost(
        `http://127.0.0.1:${port}/v1/completions`,
        JSON.stringify({ model, prompt: 'hi', max_tokens: maxTokens }),
        { headers: { 'Content-Type': 'application/json' }, timeoutMs: 20000 },
    );
}
