// The dashboard (GET /ui/) in a real headless Chromium driven by puppeteer-core,
// against a daemon with mock engines, api_keys and admin_keys:
//   - the page loads from the binary with no network beyond the daemon; without a key
//     it says the API refused it, and the key entered once is kept (localStorage)
//   - an API key that is not an admin key cannot act (the page shows the 403)
//   - a start pressed in the page, its load progress as a bar while it loads
//   - a swap happens live: a request for b evicts a (an exclusive group) and the
//     state cells change without a reload; the events list and the GPU timeline show it
//   - stop pressed in the page stops the model, with the dashboard as its reason
//   - the engine log is followed in the page; a playground chat streams its answer
//   - GPU memory bars from the nvidia-smi stand-in: an engine's memory as its model's,
//     a foreign process as not yard's
// Screenshots are kept under build/artifacts/ui/ (docs/testing.md). The test skips
// only when Chromium cannot start here, and says why.
import { test } from 'node:test';
import fs from 'node:fs';
import path from 'node:path';
import puppeteer from 'puppeteer-core';
import * as h from './lib/harness.mjs';

const { assert } = h;

const NVSMI = path.join(path.dirname(new URL(import.meta.url).pathname), 'fixtures', 'nvidia-smi');
const ARTIFACTS = process.env.YARD_ARTIFACTS_DIR
    ? path.join(process.env.YARD_ARTIFACTS_DIR, 'ui')
    : path.join(path.dirname(h.YARD_BIN), 'artifacts', 'ui');
const CHROMIUM_CANDIDATES = [process.env.YARD_CHROMIUM, '/usr/bin/chromium', '/usr/bin/chromium-browser'];

/** Starts Chromium, or returns {why} saying why it cannot start here. */
async function launch() {
    const exe = CHROMIUM_CANDIDATES.find((p) => p && fs.existsSync(p));
    if (!exe)
        return {
            why: `no Chromium at ${CHROMIUM_CANDIDATES.filter(Boolean).join(' or ')}; install Debian's 'chromium' (scripts/deps.sh test) or set YARD_CHROMIUM`,
        };
    try {
        const browser = await puppeteer.launch({
            executablePath: exe,
            headless: true,
            // As root Chromium refuses its sandbox; /dev/shm may be small in containers.
            args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run'],
            userDataDir: h.tmpdir('yard-chromium-'),
            timeout: 60000,
        });
        return { browser, pid: browser.process().pid };
    } catch (err) {
        // Its first lines say why (the exit code, then what Chromium printed).
        const what = err.message.split('\n').map((l) => l.trim()).filter(Boolean).slice(0, 4).join(' / ');
        return { why: `${exe} cannot start here: ${what}` };
    }
}

async function shot(page, name) {
    fs.mkdirSync(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: path.join(ARTIFACTS, `${name}.png`), fullPage: true });
}

/** The text of the state cell of model's replica 0 in the page. */
const stateOf = (page, model) =>
    page.$eval(`#instances tr[data-model="${model}"][data-replica="0"] td.state`, (td) => td.dataset.state);

/**
 * Presses model's ACTION button in the instances table. Clicked inside the page in one
 * turn: the table is redrawn as events arrive, so a handle found first and clicked
 * after can be a row that is gone ("Node is detached from document").
 */
async function press(page, model, action) {
    const found = await page.evaluate(
        (m, a) => {
            const b = document.querySelector(`#instances tr[data-model="${m}"] button[data-action="${a}"]`);
            if (b) b.click();
            return !!b;
        },
        model,
        action
    );
    assert.ok(found, `no ${action} button for ${model} in the instances table`);
}

async function waitState(page, model, want, what) {
    await page
        .waitForFunction(
            (m, s) => {
                const td = document.querySelector(`#instances tr[data-model="${m}"][data-replica="0"] td.state`);
                return td && td.dataset.state === s;
            },
            { timeout: 30000, polling: 50 },
            model,
            want
        )
        .catch(async (err) => {
            throw new Error(`${what}: '${model}' is ${await stateOf(page, model).catch(() => '?')}, not ${want}: ${err.message}`);
        });
}

test('the dashboard: live swap, stop, log, playground, GPUs, in headless Chromium', async (t) => {
    const dir = h.tmpdir();
    const port = await h.freePort();
    const url = `http://127.0.0.1:${port}`;
    // The engines write the ledger the nvidia-smi stand-in reads: their memory shows as yard's.
    const ledger = path.join(h.tmpdir('yard-ledger-'), 'ledger');
    const mock = `${h.MOCK_ENGINE_BIN} --flavor vllm --port \${PORT} --name \${NAME} --load-time 600ms --vram 10GiB --ledger ${ledger}`;
    const yaml =
        `listen: 127.0.0.1:${port}\n` +
        `api_keys: [ k-api ]\nadmin_keys: [ k-admin ]\n` +
        `tools: ${JSON.stringify({ nvidia_smi: NVSMI })}\n` +
        `defaults: { stop_timeout: 2s }\n` +
        `models:\n` +
        `  a: { engine: vllm, gpus: [0], cmd: ${JSON.stringify(mock)} }\n` +
        `  b: { engine: vllm, gpus: [0], cmd: ${JSON.stringify(mock)} }\n` +
        `groups:\n  gpu0: { exclusive: true, members: [ a, b ] }\n`;
    const d = await h.startDaemon({
        config: h.writeConfig(dir, yaml),
        stateDir: dir,
        env: {
            YARD_FAKE_GPUS: '0,NVIDIA H100 80GB HBM3,81559',
            YARD_FAKE_GPU_APPS: `0,${process.pid},python3,4096`,
            YARD_FAKE_LEDGER: ledger,
        },
    });

    const { browser, pid, why } = await launch();
    if (!browser) {
        t.skip(why);
        await d.stop();
        return;
    }
    try {
        const page = await browser.newPage();
        await page.setViewport({ width: 1400, height: 1000 });
        // Nothing but the daemon: any other address the page asks for fails the test.
        const elsewhere = [];
        const pageErrors = [];
        page.on('request', (r) => {
            if (!r.url().startsWith(url) && !r.url().startsWith('data:')) elsewhere.push(r.url());
        });
        page.on('pageerror', (e) => pageErrors.push(e.message));

        let res = await page.goto(`${url}/ui/`, { waitUntil: 'load' });
        assert.equal(res.status(), 200);
        // No key yet: the API refuses, and the page says so.
        await page.waitForFunction(() => /missing or invalid API key/.test(document.querySelector('#error').textContent), {
            timeout: 30000,
        });
        await shot(page, '01-no-key');

        // An API key reads but cannot act.
        await page.type('#key', 'k-api');
        await page.click('#keyform button[type=submit]');
        await waitState(page, 'a', 'stopped', 'with the API key');
        await waitState(page, 'b', 'stopped', 'with the API key');
        await press(page, 'a', 'start');
        await page.waitForFunction(() => /needs one of the config's admin_keys/.test(document.querySelector('#error').textContent), {
            timeout: 30000,
        });
        assert.equal((await h.ps(dir)).find((e) => e.name === 'a').state, 'stopped');

        // The admin key, entered once, is kept across a reload.
        await page.$eval('#key', (i) => (i.value = ''));
        await page.type('#key', 'k-admin');
        await page.click('#keyform button[type=submit]');
        res = await page.reload({ waitUntil: 'load' });
        assert.equal(await page.$eval('#key', (i) => i.value), 'k-admin');
        await page.waitForFunction(() => document.querySelector('#conn').textContent === 'live', { timeout: 30000 });

        // Start a from the page; its load progress shows as a bar while it loads.
        const bars = await page.evaluateHandle(() => {
            const seen = [];
            new MutationObserver(() => {
                const bar = document.querySelector('#instances tr[data-model="a"] td.state .bar');
                if (bar) seen.push(bar.title);
            }).observe(document.querySelector('#instances tbody'), { childList: true, subtree: true });
            return seen;
        });
        await press(page, 'a', 'start');
        await waitState(page, 'a', 'ready', 'after start pressed');
        const barsSeen = await bars.jsonValue();
        assert.ok(barsSeen.length > 0, 'no progress bar while a loaded');
        assert.ok(barsSeen.every((t) => /^\d+%$/.test(t)), barsSeen.join(' '));
        assert.equal((await h.ps(dir)).find((e) => e.name === 'a').state, 'ready');

        // A swap, live: a request for b evicts a. The page is not reloaded (the marker stays).
        await page.evaluate(() => (window.__noReload = 1));
        const seen = await page.evaluateHandle(() => {
            const states = [];
            new MutationObserver(() => {
                for (const td of document.querySelectorAll('#instances tr[data-replica="0"] td.state'))
                    states.push(`${td.parentElement.dataset.model}:${td.dataset.state}`);
            }).observe(document.querySelector('#instances tbody'), { childList: true, subtree: true });
            return states;
        });
        const chat = await h.httpPost(
            `${url}/v1/chat/completions`,
            { model: 'b', messages: [{ role: 'user', content: 'hi' }], max_tokens: 4 },
            { headers: { Authorization: 'Bearer k-api' } }
        );
        assert.equal(chat.status, 200, chat.body);
        await waitState(page, 'b', 'ready', 'after the request for b');
        await waitState(page, 'a', 'stopped', 'after the swap');
        assert.equal(await page.evaluate(() => window.__noReload), 1, 'the page was reloaded');
        const states = await seen.jsonValue();
        assert.ok(states.includes('a:stopping') || states.includes('a:stopped'), `a's cell changed: ${states.join(' ')}`);
        assert.ok(states.includes('b:ready'), `b's cell changed: ${states.join(' ')}`);
        // The events list has the swap, with the reason.
        const eventsText = await page.$eval('#events', (o) => o.textContent);
        assert.match(eventsText, /a@local: ready → stopping/);
        assert.match(eventsText, /b@local: starting → ready/);
        // The timeline: GPU 0 held by a, then by b.
        await page.waitForFunction(
            () => {
                const row = document.querySelector('#timeline .row[data-gpu="local:0"]');
                if (!row) return false;
                const models = [...row.querySelectorAll('.seg')].map((s) => s.dataset.model);
                return models.includes('a') && models.includes('b');
            },
            { timeout: 30000 }
        );
        // GPU memory: the stand-in's GPU 0 with b's engine as yard's and this test process
        // as a foreign user.
        await page.waitForFunction(
            () =>
                document.querySelector('#gpus .gpu[data-host="local"][data-index="0"] .membar .foreign') &&
                document.querySelector('#gpus .gpu[data-host="local"][data-index="0"] .membar .mine[data-model="b"]'),
            { timeout: 30000 }
        );
        // The last minute, where the swap is wide enough to see.
        await page.select('#span', '1');
        await shot(page, '02-after-swap');

        // Stop b from the page.
        await press(page, 'b', 'stop');
        await waitState(page, 'b', 'stopped', 'after stop pressed');
        assert.equal((await h.ps(dir)).find((e) => e.name === 'b').state, 'stopped');
        await page.waitForFunction(
            () => /stopped by the dashboard/.test(document.querySelector('#instances tr[data-model="b"] td.reason').textContent),
            { timeout: 30000 }
        );
        await shot(page, '03-stopped');

        // The engine log of b, followed: its history has the engine's start-up lines.
        await page.select('#logmodel', 'b');
        await page.waitForFunction(
            () => document.querySelector('#log').dataset.model === 'b' && /vLLM API server/.test(document.querySelector('#log').textContent),
            { timeout: 30000 }
        );
        // ... and a line written now arrives without asking again: a's start shows in a's log.
        await page.select('#logmodel', 'a');
        await page.waitForFunction(() => /vLLM API server/.test(document.querySelector('#log').textContent), { timeout: 30000 });
        const before = await page.$eval('#log', (p) => (p.textContent.match(/POST \/v1\/chat\/completions/g) || []).length);

        // The playground: a chat to a streams its answer (a starts again for it).
        await page.select('#playmodel', 'a');
        await page.$eval('#prompt', (p) => (p.value = 'Hello from the test'));
        await page.click('#send');
        await page.waitForFunction(() => document.querySelector('#answer').dataset.done, { timeout: 30000 });
        assert.equal(await page.$eval('#answer', (p) => p.dataset.done), 'ok', await page.$eval('#answer', (p) => p.textContent));
        assert.match(await page.$eval('#answer', (p) => p.textContent), /^tok0 tok1 /);
        await page.waitForFunction(
            (n) => (document.querySelector('#log').textContent.match(/POST \/v1\/chat\/completions/g) || []).length > n,
            { timeout: 30000 },
            before
        );
        // Requests per model from /metrics (polled every 5 s by the page).
        await page.waitForFunction(() => document.querySelector('#rates tr[data-model="a"]'), { timeout: 30000 });
        await shot(page, '04-log-and-playground');

        assert.deepEqual(elsewhere, [], 'the page asked for addresses other than the daemon');
        assert.deepEqual(pageErrors, [], 'the page threw');
    } finally {
        await browser.close().catch(() => {});
        try {
            process.kill(-pid, 'SIGKILL'); // its group, if anything of it is left
        } catch {
            // gone already
        }
    }
    await d.stop();
});
