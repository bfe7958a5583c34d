// yard's HTTP/1.1 front door, with raw sockets: header and body limits (431, 413
// in OpenAI's error shape), pipelined requests answered in order, keep-alive
// reuse, Expect: 100-continue, a slowloris client that blocks nobody and is cut
// off at router.header_timeout, a body trickled in and cut off at
// router.body_timeout, idle keep-alive connections closed at
// router.idle_timeout, 1000 idle connections that do not stop a new one, field
// names that are not tokens (400 from yard, not the engine's 502), limits
// changed by a reload, and SSE readers that stop reading: the relay pauses the
// engine, and router.max_buffered drops the slowest.

import fs from 'node:fs';
import { test } from 'node:test';
import { assert, httpGet, writeConfig, waitFor, adminResult } from './lib/harness.mjs';
import {
    routerDaemon,
    mockCmd,
    assertOpenAIError,
    rawConnect,
    rawRequest,
    parseResponses,
    chatBody,
    noQuarantineEnv,
    stallClients,
} from './lib/router-helpers.mjs';

const MODELS = { m: { engine: 'vllm', cmd: mockCmd('vllm', '--load-time 200ms') } };

test('headers over 32 KiB: 431 in OpenAI shape; 24 KiB of headers are fine', async () => {
    const y = await routerDaemon({ models: MODELS });
    const big = await rawConnect(y.port);
    big.send(`GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: ${'a'.repeat(40 * 1024)}\r\n\r\n`);
    const [r] = await big.responses(1);
    assert.equal(r.status, 431, r.raw.toString());
    assertOpenAIError(r.body, '431');
    assert.ok(await big.waitClose(5000), 'connection left open after 431');

    // Several headers adding up past the limit count too.
    const many = await rawConnect(y.port);
    let head = 'GET /health HTTP/1.1\r\nHost: x\r\n';
    for (let i = 0; i < 40; i++) head += `X-H${i}: ${'b'.repeat(1024)}\r\n`;
    many.send(`${head}\r\n`);
    const [r2] = await many.responses(1);
    assert.equal(r2.status, 431);

    const ok = await rawConnect(y.port);
    ok.send(`GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: ${'a'.repeat(24 * 1024)}\r\n\r\n`);
    const [r3] = await ok.responses(1);
    assert.equal(r3.status, 200, r3.raw.toString());
    ok.destroy();
    await y.d.stop();
});

test('router.max_body: a larger body gets 413 in OpenAI shape (Content-Length or chunked)', async () => {
    const y = await routerDaemon({ router: { max_body: '64KiB' }, models: MODELS });

    // Content-Length over the limit: refused from the head, before any body is sent.
    const cl = await rawConnect(y.port);
    cl.send(
        'POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n' +
            `Content-Length: ${100 * 1024}\r\n\r\n`
    );
    const [r] = await cl.responses(1);
    assert.equal(r.status, 413, r.raw.toString());
    assertOpenAIError(r.body, '413 (Content-Length)');
    cl.destroy();

    // Chunked: refused once the decoded body passes the limit.
    const ch = await rawConnect(y.port);
    let req = 'POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n' +
        'Transfer-Encoding: chunked\r\n\r\n';
    const piece = `{"model":"m","pad":"${'x'.repeat(16 * 1024)}`;
    req += `${piece.length.toString(16)}\r\n${piece}\r\n`;
    for (let i = 0; i < 5; i++) {
        const more = 'y'.repeat(16 * 1024);
        req += `${more.length.toString(16)}\r\n${more}\r\n`;
    }
    req += '2\r\n"}\r\n0\r\n\r\n';
    ch.send(req);
    const [r2] = await ch.responses(1);
    assert.equal(r2.status, 413, r2.raw.toString());
    assertOpenAIError(r2.body, '413 (chunked)');
    ch.destroy();

    // Just under the limit: read and routed (an unknown model here, so 404, no engine).
    const body = JSON.stringify({ model: 'nope', pad: 'z'.repeat(60 * 1024) });
    const under = await rawConnect(y.port);
    under.send(rawRequest('POST', '/v1/chat/completions', body, { 'content-type': 'application/json' }));
    const [r3] = await under.responses(1);
    assert.equal(r3.status, 404, r3.raw.toString().slice(0, 500));
    under.destroy();
    await y.d.stop();
});

test('pipelined requests in one write: answered in order on the same connection', async () => {
    const y = await routerDaemon({ models: MODELS });
    const c = await rawConnect(y.port);
    c.send(
        rawRequest('GET', '/health') +
            rawRequest('GET', '/v1/models') +
            rawRequest('POST', '/v1/chat/completions', { messages: [] }) +
            rawRequest('GET', '/health')
    );
    const rs = await c.responses(4);
    assert.deepEqual(
        rs.map((r) => r.status),
        [200, 200, 400, 200]
    );
    assert.equal(JSON.parse(rs[1].body).object, 'list');
    assertOpenAIError(rs[2].body, 'pipelined 400');
    assert.equal(c.closed, false, 'connection closed after pipelined requests');
    c.destroy();
    await y.d.stop();
});

test('keep-alive: one connection serves requests one after another', async () => {
    const y = await routerDaemon({ models: MODELS });
    const c = await rawConnect(y.port);
    for (let i = 1; i <= 5; i++) {
        c.send(rawRequest('GET', i % 2 ? '/health' : '/v1/models'));
        const rs = await c.responses(i);
        assert.equal(rs[i - 1].status, 200, `request ${i}`);
        assert.doesNotMatch(String(rs[i - 1].headers.connection || ''), /close/i);
        assert.equal(c.closed, false, `closed after request ${i}`);
    }
    // HTTP/1.0 without keep-alive: answered, then closed.
    c.send('GET /health HTTP/1.0\r\n\r\n');
    assert.ok(await c.waitClose(5000), 'HTTP/1.0 request left the connection open');
    const all = parseResponses(c.received(), { closed: true }).responses;
    assert.equal(all.length, 6);
    assert.equal(all[5].status, 200);
    await y.d.stop();
});

test('Expect: 100-continue: "100 Continue" comes before the body is sent, then the answer', async () => {
    const y = await routerDaemon({ models: MODELS });
    const c = await rawConnect(y.port);
    const body = JSON.stringify({ model: 'nope', messages: [{ role: 'user', content: 'hi' }] });
    c.send(
        'POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n' +
            `Content-Length: ${Buffer.byteLength(body)}\r\nExpect: 100-continue\r\n\r\n`
    );
    await c.waitData((buf) => buf.includes('\r\n\r\n'), 5000, 'an interim response');
    assert.match(c.received().toString('latin1'), /^HTTP\/1\.1 100 Continue\r\n\r\n$/);
    c.send(body);
    const rs = await c.responses(2);
    assert.equal(rs[0].status, 100);
    assert.equal(rs[1].status, 404, rs[1].raw.toString());
    assertOpenAIError(rs[1].body, 'after 100-continue');
    c.destroy();
    await y.d.stop();
});

test('slowloris: a header trickling in blocks nobody and is cut off at router.header_timeout', async () => {
    const y = await routerDaemon({ router: { header_timeout: '2s' }, models: MODELS });
    const slow = await rawConnect(y.port);
    slow.send('GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ');
    // One byte a second, never ending the head (load, not synchronisation).
    const drip = setInterval(() => slow.send('a'), 1000);
    try {
        const t0 = Date.now();
        const r = await httpGet(`${y.base}/health`, { timeoutMs: 5000 });
        assert.equal(r.status, 200);
        assert.ok(Date.now() - t0 < 5000, 'the other client waited on the slow one');

        // Also a second slow client, and a request on a kept-alive connection meanwhile.
        const ka = await rawConnect(y.port);
        ka.send(rawRequest('GET', '/health'));
        assert.equal((await ka.responses(1))[0].status, 200);
        ka.destroy();

        assert.ok(await slow.waitClose(10000), 'the slow client was never cut off');
        const got = slow.received();
        if (got.length) {
            const rs = parseResponses(got, { closed: true }).responses;
            assert.equal(rs.length, 1, got.toString());
            assert.equal(rs[0].status, 408, got.toString());
            assertOpenAIError(rs[0].body, '408');
        }
    } finally {
        clearInterval(drip);
        slow.destroy();
    }
    await y.d.stop();
});

test('slowloris after a first request: the next head on a kept-alive connection has the same deadline', async () => {
    const y = await routerDaemon({ router: { header_timeout: '2s' }, models: MODELS });
    const c = await rawConnect(y.port);
    c.send(rawRequest('GET', '/health'));
    assert.equal((await c.responses(1))[0].status, 200);
    c.send('GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ');
    const drip = setInterval(() => c.send('a'), 1000);
    try {
        assert.ok(await c.waitClose(10000), 'a slow second head on a kept-alive connection was never cut off');
    } finally {
        clearInterval(drip);
        c.destroy();
    }
    await y.d.stop();
});

test('router.idle_timeout: an idle keep-alive connection is closed', async () => {
    const y = await routerDaemon({ router: { idle_timeout: '1s' }, models: MODELS });
    const c = await rawConnect(y.port);
    c.send(rawRequest('GET', '/health'));
    assert.equal((await c.responses(1))[0].status, 200);
    assert.ok(await c.waitClose(10000), 'an idle connection was kept past idle_timeout');
    // A connection that never sends anything goes the same way.
    const silent = await rawConnect(y.port);
    assert.ok(await silent.waitClose(10000), 'a silent connection was kept past idle_timeout');
    await y.d.stop();
});

test('1000 idle connections: a new client is still answered', async () => {
    const y = await routerDaemon({ models: MODELS });
    const idle = [];
    try {
        for (let i = 0; i < 1000; i += 50) {
            const batch = await Promise.all(Array.from({ length: 50 }, () => rawConnect(y.port)));
            idle.push(...batch);
        }
        const r = await httpGet(`${y.base}/health`, { timeoutMs: 10000 });
        assert.equal(r.status, 200);
        // The idle ones are still served too.
        const first = idle[0];
        first.send(rawRequest('GET', '/health'));
        assert.equal((await first.responses(1))[0].status, 200);
        assert.equal(idle.filter((c) => c.closed).length, 0, 'idle connections were dropped');
    } finally {
        for (const c of idle) c.destroy();
    }
    await y.d.stop();
});

test('router.body_timeout: a body trickled a byte at a time gets 408 and the connection closes', async () => {
    const y = await routerDaemon({ router: { body_timeout: '1s', header_timeout: '1s' }, models: MODELS });
    const slow = await rawConnect(y.port);
    slow.send(
        'POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n' +
            'Content-Length: 1000\r\n\r\n{'
    );
    // A byte every 200 ms: more often than any timeout (load, not synchronisation).
    const drip = setInterval(() => slow.send(' '), 200);
    try {
        assert.ok(await slow.waitClose(10000), 'a trickled body was never cut off');
        const rs = parseResponses(slow.received(), { closed: true }).responses;
        assert.equal(rs.length, 1, slow.received().toString());
        assert.equal(rs[0].status, 408);
        const e = assertOpenAIError(rs[0].body, '408 (body)');
        assert.match(e.message, /router\.body_timeout/);
        assert.match(String(rs[0].headers.connection), /close/i);
    } finally {
        clearInterval(drip);
        slow.destroy();
    }
    // A chunked body the same way.
    const ch = await rawConnect(y.port);
    ch.send('POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3e8\r\n');
    const drip2 = setInterval(() => ch.send('x'), 200);
    try {
        assert.ok(await ch.waitClose(10000), 'a trickled chunked body was never cut off');
        assert.equal(parseResponses(ch.received(), { closed: true }).responses[0]?.status, 408);
    } finally {
        clearInterval(drip2);
        ch.destroy();
    }
    await y.d.stop();
});

test('a field name that is not a token is 400 from yard, never a 502 from the engine', async () => {
    const y = await routerDaemon({ models: MODELS });
    const body = JSON.stringify(chatBody('m'));
    for (const bad of ['Bad Name: x', 'X(y): 1']) {
        const c = await rawConnect(y.port);
        c.send(
            `POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n${bad}\r\nContent-Type: application/json\r\n` +
                `Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`
        );
        const [r] = await c.responses(1);
        assert.equal(r.status, 400, `${bad}: ${r.raw.toString()}`);
        assertOpenAIError(r.body, `400 for '${bad}'`);
        c.destroy();
    }
    // A request-target with a tab: the same.
    const t = await rawConnect(y.port);
    t.send('GET /v1/mo\tdels HTTP/1.1\r\nHost: x\r\n\r\n');
    assert.equal((await t.responses(1))[0].status, 400);
    t.destroy();
    await y.d.stop();
});

test('reload: router limits take effect for new requests; a listen change is reported as needing a restart', async () => {
    const y = await routerDaemon({ models: MODELS });
    const big = JSON.stringify({ model: 'nope', pad: 'z'.repeat(100 * 1024) });
    const post = async () => {
        const c = await rawConnect(y.port);
        c.send(rawRequest('POST', '/v1/chat/completions', big, { 'content-type': 'application/json' }));
        const [r] = await c.responses(1);
        c.destroy();
        return r;
    };
    assert.equal((await post()).status, 404, 'a 100 KiB body is within the default router.max_body');

    // The same file with smaller limits and another listen address.
    const text = fs.readFileSync(y.config, 'utf8');
    const other = y.port === 65535 ? y.port - 1 : y.port + 1;
    writeConfig(
        y.dir,
        text.replace(`listen: 127.0.0.1:${y.port}`, `listen: 127.0.0.1:${other}`) +
            `router: ${JSON.stringify({ max_body: '64KiB', body_timeout: '1s' })}\n`
    );
    y.d.kill('SIGHUP');
    await waitFor(() => /reloaded .*applied \[([^\]]*)\]/.test(y.d.logText()), { what: 'the reload' });
    const line = y.d.logText().split('\n').find((l) => /reloaded /.test(l));
    assert.match(line, /applied \[[^\]]*router\.max_body[^\]]*\]/, line);
    assert.match(line, /applied \[[^\]]*router\.body_timeout[^\]]*\]/, line);
    assert.match(line, /needs a restart \[listen\]/, line);
    assert.match(y.d.logText(), /'listen' changed to 127\.0\.0\.1:\d+; it takes effect when yard restarts/);

    // A reload asked on the admin socket answers the same, and goes on saying
    // that listen needs a restart while the file and the running address differ.
    const again = await adminResult(y.dir, { cmd: 'reload' });
    assert.deepEqual(again.applied, [], JSON.stringify(again));
    assert.deepEqual(again.restart_needed, ['listen'], JSON.stringify(again));

    // The running server took the new limits; it still listens where it did.
    const r = await post();
    assert.equal(r.status, 413, r.raw.toString().slice(0, 300));
    assert.match(assertOpenAIError(r.body, '413 after reload').message, /65536 bytes/);
    const slow = await rawConnect(y.port);
    slow.send('POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{');
    assert.ok(await slow.waitClose(10000), 'the reloaded body_timeout was not applied');
    assert.equal(parseResponses(slow.received(), { closed: true }).responses[0]?.status, 408);
    slow.destroy();
    await y.d.stop();
});

/** VmRSS of pid in KiB. */
function rssKiB(pid) {
    const m = fs.readFileSync(`/proc/${pid}/status`, 'utf8').match(/VmRSS:\s+(\d+)/);
    return m ? Number(m[1]) : NaN;
}

test('SSE readers that stop reading: the relay pauses the engine, and router.max_buffered drops the slowest', async () => {
    // 10,000 tokens/s a stream: the engine's own work leaves it time to answer its health
    // checks under the sanitizers on a busy machine.
    const N = 16;
    const y = await routerDaemon({
        router: { max_buffered: '512KiB' },
        models: { m: { engine: 'vllm', cmd: mockCmd('vllm', '--load-time 200ms --tokens-per-sec 10000') } },
        env: noQuarantineEnv(),
    });
    // The model is loaded and the daemon warm before the baseline.
    const warm = await rawConnect(y.port);
    warm.send(rawRequest('POST', '/v1/chat/completions', chatBody('m')));
    assert.equal((await warm.responses(1, 30000))[0].status, 200);
    warm.destroy();
    const rss0 = rssKiB(y.d.pid);

    let stalled = null;
    try {
        stalled = await stallClients(y.dir, y.port, N, chatBody('m', { stream: true, max_tokens: 1000000 }));
        assert.equal(stalled.failed, 0, `${stalled.failed} of ${N} stalled clients got no first event`);
        let peak = 0;
        await waitFor(
            () => {
                peak = Math.max(peak, rssKiB(y.d.pid));
                return /passed router\.max_buffered/.test(y.d.logText());
            },
            { timeoutMs: 60000, what: 'router.max_buffered to drop a stalled reader' }
        );
        const log = y.d.logText();
        assert.match(log, /bytes wait for the client to read them \(\d+ bytes for all clients passed router\.max_buffered, 524288\); dropping it/);
        // The relay paused the engine before a client reached its own cap.
        assert.doesNotMatch(log, /per client\); dropping it/);
        // A client that reads is served meanwhile.
        const ok = await rawConnect(y.port);
        ok.send(rawRequest('POST', '/v1/chat/completions', chatBody('m')));
        assert.equal((await ok.responses(1, 10000))[0].status, 200);
        ok.destroy();
        peak = Math.max(peak, rssKiB(y.d.pid));
        const grew = peak - rss0;
        console.log(`# ${N} stalled SSE readers: RSS ${rss0} KiB before, peak +${grew} KiB (${(grew / N).toFixed(0)} KiB per reader)`);
        // Far from the 1 MiB per reader that an unpaused relay held.
        // (2 MiB more for what a sanitizer build's allocator keeps for itself.)
        assert.ok(grew < N * 512 + 2048, `RSS grew by ${grew} KiB for ${N} stalled readers`);
    } finally {
        if (stalled) await stalled.close();
    }
    await y.d.stop();
});
