// GET /metrics stays bounded and well-formed whatever clients send: labels come
// only from the config (a model name that is not configured counts under one
// model="unknown" series), label values are escaped per the Prometheus text
// format, and the page passes `promtool check metrics` (Debian's prometheus
// package; scripts/deps.sh test installs it). Without promtool the test fails
// and says what to install.

import { test } from 'node:test';
import { spawnSync } from 'node:child_process';
import { assert, httpPost, httpRequest } from './lib/harness.mjs';
import {
    routerDaemon,
    mockCmd,
    chatBody,
    getMetrics,
    samples,
    sampleSum,
    rawOne,
    METRICS,
} from './lib/router-helpers.mjs';

const FAST = '--load-time 200ms --tokens-per-sec 500';

/** Runs `promtool check metrics` on text; fails the test with a clear message when promtool is missing. */
function promtoolCheck(text) {
    const r = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8', timeout: 30000 });
    if (r.error && r.error.code === 'ENOENT') {
        assert.fail(
            "promtool not found in PATH: install Debian's 'prometheus' package " +
                '(apt-get install prometheus, or scripts/deps.sh test) to check the /metrics page'
        );
    }
    if (r.error) throw r.error;
    return { code: r.status, out: `${r.stdout}${r.stderr}` };
}

test('/metrics: crafted model names add no series and no lines; promtool accepts the page', async () => {
    const y = await routerDaemon({
        models: { m: { engine: 'vllm', cmd: mockCmd('vllm', FAST), aliases: ['m-alias'] } },
    });
    const url = `${y.base}/v1/chat/completions`;

    // One real answer, by name and by alias: counted under the configured name.
    const answers = [await httpPost(url, chatBody('m')), await httpPost(url, chatBody('m-alias'))];
    const usage = { prompt: 0, completion: 0 };
    for (const a of answers) {
        assert.equal(a.status, 200, a.body);
        const u = JSON.parse(a.body).usage;
        assert.ok(u.prompt_tokens > 0 && u.completion_tokens > 0, `the engine's usage: ${a.body}`);
        usage.prompt += u.prompt_tokens;
        usage.completion += u.completion_tokens;
    }

    // Names that would end a label or a line, in bodies and in /upstream paths.
    const crafted = [
        'evil"} 1\nyard_forged_total{model="x"} 1\n#',
        'a\\"b',
        'x}',
        'line\nbreak',
        'caf\u00e9 \ud83d\ude00',
    ];
    for (const name of crafted) {
        const r = await httpPost(url, chatBody(name));
        assert.equal(r.status, 404, `${JSON.stringify(name)}: ${r.status} ${r.body}`);
    }
    for (const path of ['%22%7D%201%0Ayard_forged_total%201%0A', 'q%22', 'back%5Cslash']) {
        const r = await httpRequest('GET', `${y.base}/upstream/${path}/health`);
        assert.ok(r.status === 404 || r.status === 400, `/upstream/${path}: ${r.status}`);
    }
    // Bytes that are not UTF-8, in a body (refused by the scan) and in a path.
    const bad = Buffer.concat([Buffer.from('{"model":"'), Buffer.from([0xff, 0xfe]), Buffer.from('"}')]);
    const rb = await httpPost(url, bad, { headers: { 'content-type': 'application/json' } });
    assert.equal(rb.status, 400, rb.body);
    const head = Buffer.concat([
        Buffer.from('GET /upstream/'),
        Buffer.from([0xc3, 0x28, 0xff]),
        Buffer.from('/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'),
    ]);
    const rr = await rawOne(y.port, head);
    assert.ok(rr.status === 404 || rr.status === 400, `/upstream/\\xc3(\\xff: ${rr.status}`);

    // Many unique names: still one series.
    for (let i = 0; i < 200; i++) {
        const r = await httpPost(url, chatBody(`unique-${i}-${Math.random().toString(36).slice(2)}`));
        assert.equal(r.status, 404);
    }

    const page = await getMetrics(y.base);
    assert.equal(page.status, 200);
    const lines = page.text.split('\n');
    for (const l of lines) {
        assert.ok(!l.startsWith('yard_forged'), `an injected line: ${JSON.stringify(l)}`);
        if (l === '' || l.startsWith('#')) continue;
        assert.match(l, /^yard_[a-z_]+(\{[^\n]*\})? \S+$/, `not a sample line: ${JSON.stringify(l)}`);
    }
    const req = samples(page.all, METRICS.requests);
    const models = new Set(req.map((s) => s.labels.model));
    for (const m of models) assert.ok(['m', 'unknown', '-'].includes(m), `a label not from the config: ${JSON.stringify(m)}`);
    const unknown404 = req.filter((s) => s.labels.model === 'unknown' && s.labels.status === '404');
    assert.equal(unknown404.length, 1, `unknown/404 series: ${JSON.stringify(unknown404)}`);
    assert.ok(unknown404[0].value >= crafted.length + 200, `unknown/404 counted ${unknown404[0].value}`);
    const ok = req.filter((s) => s.labels.model === 'm' && s.labels.status === '200');
    assert.equal(ok.length, 1);
    assert.equal(ok[0].value, 2, 'the alias counts under the model');
    // The tokens the engine reported in its answers' usage, as yard scanned them.
    for (const kind of ['prompt', 'completion'])
        assert.equal(sampleSum(page.all, 'yard_tokens_total', { kind }), usage[kind], `${kind} tokens`);
    assert.ok(Buffer.byteLength(page.text) < 16384, `the page grew to ${Buffer.byteLength(page.text)} bytes`);

    const p = promtoolCheck(page.text);
    assert.equal(p.code, 0, `promtool check metrics failed:\n${p.out}\npage:\n${page.text}`);
});
