// `yard cloud offers`: the real daemon asks the Vast stand-in (lib/vast-standin.mjs)
// for offers and ranks them (docs/cloud.md).
//
//   - the search as the stand-in recorded it: Authorization: Bearer with the key
//     from ${env.VAST_API_KEY}, the strictness floors (balanced, strict,
//     aggressive), max_price as dph_total, the disk as allocated_storage, the
//     user's filters, the need from --gpus/--vram or a model
//   - the ranking (price, then the API's score) with a reason per rank, the table
//     and the stable --json
//   - an API that ignores the filters: every offer checked again, each exclusion
//     with its reason
//   - a 429 burst retried until the answer; a 429 storm and a persistent 5xx past
//     the retry bound, a wrong key, a key variable not set, an API nothing answers
//     at, an unknown cloud: each one line
//   - a cloud's name is a host name: `yard pod add` refuses it, and a model that
//     lists it rents there (e2e/cloud-rent): with an API that does not answer, its
//     start fails with the search's line
//
// Every machine here is an offer only: nothing is rented.

import { describe, test, before, after } from 'node:test';
import fs from 'node:fs';
import path from 'node:path';
import { assert, tmpdir, freePort, waitFor, yard, yardJson } from './lib/harness.mjs';
import { startVastStandin } from './lib/vast-standin.mjs';
import { cloudDaemon } from './lib/cloud.mjs';

const SEARCH = '/api/v0/bundles/';

/** A key pair's files where ssh_key wants them (the offers never use them). */
function keyFiles(dir) {
    const key = path.join(dir, 'id_ed25519');
    fs.writeFileSync(key, 'a private key\n', { mode: 0o600 });
    fs.writeFileSync(`${key}.pub`, 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI yard-test\n');
    return key;
}

/**
 * A daemon with one cloud `vast` at url (cloud: extra keys of the cloud, as YAML
 * lines at 4 spaces) and models (name -> flow mapping text); env for the daemon.
 */
async function daemon({ url, cloud = '', models = {}, env = {} }) {
    const dir = tmpdir();
    let text = '';
    if (Object.keys(models).length) {
        text += 'models:\n';
        for (const [name, body] of Object.entries(models)) text += `  ${name}: ${body}\n`;
    }
    const { d } = await cloudDaemon({ url, sshKey: keyFiles(dir), dir, cloud, models: text, env });
    return { dir, d };
}

const offersJson = (dir, args = []) => yardJson(['cloud', 'offers', 'vast', '--json', ...args], { stateDir: dir });
const searches = (s) => s.state.requests.filter((r) => r.path === SEARCH);

/** The one error line of a failed `yard cloud offers`, checked for exit 1 and one line. */
async function offersError(dir, cloud = 'vast') {
    const r = await yard(['cloud', 'offers', cloud], { stateDir: dir });
    assert.equal(r.code, 1, `exit code; stdout: ${r.stdout}`);
    assert.equal(r.stdout, '');
    const lines = r.stderr.split('\n').filter(Boolean);
    assert.equal(lines.length, 1, `one line: ${r.stderr}`);
    return lines[0];
}

// Offers every strictness passes, unless they say otherwise (the stand-in fills the rest).
const OFFERS = [
    { id: 101, machine_id: 1001, dph_total: 0.4, score: 100 },
    { id: 102, machine_id: 1002, dph_total: 0.3, score: 80 },
    { id: 103, machine_id: 1003, dph_total: 0.4, score: 120 },
    { id: 104, machine_id: 1004, dph_total: 0.2, reliability2: 0.85 }, // under balanced's 0.9
    { id: 105, machine_id: 1005, dph_total: 0.25, verified: false },
    { id: 106, machine_id: 1006, dph_total: 2.5 }, // over max_price
    { id: 107, machine_id: 1007, dph_total: 0.45, datacenter: true, reliability2: 0.99 },
    { id: 108, machine_id: 1008, dph_total: 0.35, direct_port_count: 0 },
    { id: 109, machine_id: 1009, dph_total: 0.5, num_gpus: 2, gpu_ram: 49140, gpu_name: 'A6000' },
    { id: 110, machine_id: 1010, dph_total: 0.6, gpu_name: 'RTX 3090', geolocation: 'Bavaria, DE' },
];

describe('cloud offers against the stand-in', () => {
    let s;
    before(async () => {
        s = await startVastStandin({ offers: OFFERS, sshd: false });
    });
    after(async () => {
        await s.stop();
    });

    test('balanced: the search sent, the ranking and its reasons, table and --json', async () => {
        const { dir, d } = await daemon({ url: s.url, env: { VAST_API_KEY: s.apiKey } });
        try {
            // libcurl is loaded by the first request to a cloud, not at start (src/cloud/curl_dl.c).
            const maps = () => fs.readFileSync(`/proc/${d.pid}/maps`, 'utf8');
            assert.doesNotMatch(maps(), /libcurl/, 'libcurl mapped before any cloud request');
            const before_ = searches(s).length;
            const r = await offersJson(dir);
            assert.match(maps(), /libcurl\.so\.4/, 'libcurl not mapped after a cloud request');
            const sent = searches(s).slice(before_);
            assert.equal(sent.length, 1);
            const req = sent[0];
            assert.equal(req.method, 'POST');
            assert.equal(req.headers.authorization, `Bearer ${s.apiKey}`);
            assert.equal(req.headers['content-type'], 'application/json');
            assert.deepEqual(req.json, {
                rentable: { eq: true },
                rented: { eq: false },
                external: { eq: false },
                verified: { eq: true },
                reliability2: { gte: 0.9 },
                inet_down: { gt: 128 },
                direct_port_count: { gte: 1 },
                num_gpus: { eq: 1 },
                dph_total: { lte: 1.5 },
                order: [
                    ['dph_total', 'asc'],
                    ['score', 'desc'],
                ],
                type: 'on-demand',
                limit: 64,
                allocated_storage: 40,
            });
            // The stand-in applied the floor: 104 (reliability), 105 (unverified),
            // 106 (price), 108 (no direct port) and 109 (2 GPUs) never came back.
            assert.deepEqual(
                r.offers.map((o) => o.id),
                [102, 103, 101, 107, 110],
            );
            assert.deepEqual(
                r.offers.map((o) => o.rank),
                [1, 2, 3, 4, 5],
            );
            assert.deepEqual(r.excluded, []);
            assert.equal(r.offers[0].reason, 'the cheapest: $0.300/h');
            assert.equal(r.offers[1].reason, '$0.400/h, more than the one above ($0.300/h)');
            assert.equal(r.offers[2].reason, '$0.400/h as the one above, and a lower API score (100 against 120)');
            assert.equal(r.cloud, 'vast');
            assert.equal(r.strictness, 'balanced');
            assert.deepEqual(r.need, { gpus: 1, vram: null });
            assert.deepEqual(r.query, req.json);
            // The stable keys of an offer.
            assert.deepEqual(Object.keys(r.offers[0]).sort(), [
                'datacenter',
                'direct_port_count',
                'dph_total',
                'geolocation',
                'gpu_name',
                'gpu_ram_mib',
                'history',
                'host_id',
                'id',
                'inet_down',
                'machine_id',
                'num_gpus',
                'rank',
                'reason',
                'reliability',
                'score',
                'verified',
            ]);
            assert.equal(r.offers[0].machine_id, 1002);
            assert.equal(r.offers[0].gpu_name, 'RTX 4090');
            assert.equal(r.offers[0].gpu_ram_mib, 24564);
            assert.equal(r.offers[0].dph_total, 0.3);
            assert.equal(r.offers[4].geolocation, 'Bavaria, DE');
            // No rental yet: no history of any machine.
            assert.deepEqual(r.offers[0].history, { ready: 0, failed: 0, mean_ready_s: null, last_failure: null });

            const t = await yard(['cloud', 'offers', 'vast'], { stateDir: dir });
            assert.equal(t.code, 0, t.stderr);
            const lines = t.stdout.trimEnd().split('\n');
            assert.equal(lines[0], 'vast (strictness balanced): 5 offers for 1 GPU, any memory; 0 excluded');
            assert.match(lines[1], /^RANK\s+OFFER\s+MACHINE\s+GPUS\s+\$\/H\s+RELIAB\.\s+MB\/S\s+LOCATION\s+WHY$/);
            assert.match(lines[2], /^1\s+102\s+1002\s+1x RTX 4090 24\.0GiB\s+0\.300\s+0\.995\s+900\s+Oregon, US\s+the cheapest: \$0\.300\/h$/);
            assert.equal(lines.length, 7);
        } finally {
            await d.stop();
        }
    });

    test('strict and aggressive: their floors in the body, and what they let through', async () => {
        const strict = await daemon({ url: s.url, cloud: '    strictness: strict\n', env: { VAST_API_KEY: s.apiKey } });
        try {
            const r = await offersJson(strict.dir);
            assert.equal(r.strictness, 'strict');
            assert.deepEqual(r.query.verified, { eq: true });
            assert.deepEqual(r.query.datacenter, { eq: true });
            assert.deepEqual(r.query.reliability2, { gte: 0.98 });
            assert.deepEqual(r.query.inet_down, { gte: 500 });
            assert.deepEqual(r.query.direct_port_count, { gte: 1 });
            assert.deepEqual(searches(s).at(-1).json, r.query);
            assert.deepEqual(
                r.offers.map((o) => o.id),
                [107],
            );
            assert.equal(r.offers[0].reason, 'the one offer that passes: $0.450/h');
        } finally {
            await strict.d.stop();
        }
        const aggr = await daemon({ url: s.url, cloud: '    strictness: aggressive\n', env: { VAST_API_KEY: s.apiKey } });
        try {
            const r = await offersJson(aggr.dir);
            const q = searches(s).at(-1).json;
            assert.deepEqual(q.reliability2, { gte: 0.8 });
            for (const f of ['verified', 'datacenter', 'inet_down', 'direct_port_count']) assert.ok(!(f in q), f);
            assert.deepEqual(
                r.offers.map((o) => o.id),
                [104, 105, 102, 108, 103, 101, 107, 110],
            );
        } finally {
            await aggr.d.stop();
        }
    });

    test('filters, --gpus, --vram and a model: in the body, and applied', async () => {
        const { dir, d } = await daemon({
            url: s.url,
            cloud:
                '    strictness: aggressive\n' +
                '    filters:\n' +
                '      gpu_name: "RTX 4090"\n' +
                '      geolocation: [US, CA]\n' +
                '      reliability2: { gte: 0.95 }\n',
            models: { big: '{ cmd: "sleep 1000", gpus: 2, vram: 40GiB }' },
            env: { VAST_API_KEY: s.apiKey },
        });
        try {
            let r = await offersJson(dir);
            let q = searches(s).at(-1).json;
            assert.deepEqual(q.gpu_name, { eq: 'RTX 4090' });
            assert.deepEqual(q.geolocation, { in: ['US', 'CA'] });
            assert.deepEqual(q.reliability2, { gte: 0.95 }, 'the stricter of the floor and the filter');
            assert.deepEqual(
                r.offers.map((o) => o.id),
                [105, 102, 108, 103, 101, 107],
            );

            r = await offersJson(dir, ['--gpus', '2', '--vram', '40GiB']);
            q = searches(s).at(-1).json;
            assert.deepEqual(q.num_gpus, { eq: 2 });
            assert.deepEqual(q.gpu_ram, { gte: 40960 });
            assert.deepEqual(r.need, { gpus: 2, vram: 40 * 1024 ** 3 });
            assert.deepEqual(r.offers, [], 'the 2-GPU offer is an A6000');

            await offersJson(dir, ['--model', 'big']);
            q = searches(s).at(-1).json;
            assert.deepEqual(q.num_gpus, { eq: 2 });
            assert.deepEqual(q.gpu_ram, { gte: 40960 });
            await offersJson(dir, ['--model', 'big', '--gpus', '1']);
            assert.deepEqual(searches(s).at(-1).json.num_gpus, { eq: 1 }, '--gpus over the model');

            const t = await yard(['cloud', 'offers', 'vast', '--gpus', '2', '--vram', '40GiB'], { stateDir: dir });
            assert.equal(t.code, 0, t.stderr);
            assert.equal(
                t.stdout,
                'vast (strictness aggressive): 0 offers for 2 GPUs, 40.0GiB each; 0 excluded\n' +
                    'no offer passes; loosen the cloud\'s strictness, max_price or filters, or ask for less\n',
            );
            const m = await yard(['cloud', 'offers', 'vast', '--model', 'nope'], { stateDir: dir });
            assert.equal(m.code, 1);
            assert.equal(m.stderr, "yard: unknown model 'nope'; give a model of the config, or --gpus and --vram\n");
        } finally {
            await d.stop();
        }
    });

    test('an API that ignores the filters: every offer checked again, each exclusion with its reason', async () => {
        const { dir, d } = await daemon({ url: s.url, env: { VAST_API_KEY: s.apiKey } });
        try {
            const good = { ...s.state.offers.get(102) };
            const offers = [
                { ...s.state.offers.get(104) }, // reliability2 0.85
                good,
                { ...s.state.offers.get(106) }, // $2.50
                { ...good }, // the same offer again
                { ...s.state.offers.get(109) }, // 2 GPUs
                { ...good, id: 111, machine_id: 1011, verified: false },
            ];
            await s.script({ kind: 'http', path: SEARCH, status: 200, body: { offers } });
            const r = await offersJson(dir);
            assert.deepEqual(
                r.offers.map((o) => o.id),
                [102],
            );
            assert.deepEqual(
                r.excluded.map((o) => [o.id, o.reason]),
                [
                    [104, 'reliability2 is 0.85, under 0.9 (strictness balanced)'],
                    [106, 'dph_total is 2.5, above 1.5 (max_price)'],
                    [102, 'the API listed this offer twice'],
                    [109, 'num_gpus is 2, not 1 (--gpus)'],
                    [111, 'verified is false, not true (strictness balanced)'],
                ],
            );
            assert.ok(!('rank' in r.excluded[0]));

            await s.script({ kind: 'http', path: SEARCH, status: 200, body: { offers } });
            const t = await yard(['cloud', 'offers', 'vast'], { stateDir: dir });
            assert.equal(t.code, 0, t.stderr);
            assert.match(t.stdout, /^vast \(strictness balanced\): 1 offer for 1 GPU, any memory; 5 excluded\n/);
            assert.match(t.stdout, /\nexcluded:\n {2}offer 104 \(machine 1004\): reliability2 is 0\.85, under 0\.9 \(strictness balanced\)\n/);
            assert.match(t.stdout, /\n {2}offer 111 \(machine 1011\): verified is false, not true \(strictness balanced\)\n$/);

            // Answers that are not the API's: refused whole, in one line.
            await s.script({ kind: 'http', path: SEARCH, status: 200, body: { offers: Array(1025).fill({}) } });
            assert.equal(
                await offersError(dir),
                "yard: cloud 'vast': the Vast API answered the search with 1025 offers, more than the 1024 yard reads (it asked for 64); is clouds.vast.url the API?",
            );
            await s.script({ kind: 'http', path: SEARCH, status: 200, body: 'x'.repeat(5 << 20), contentType: 'text/plain' });
            assert.equal(
                await offersError(dir),
                "yard: cloud 'vast': the Vast API's answer to the search is too large (the answer is larger than 4194304 bytes); is clouds.vast.url the API?",
            );
            await s.script({ kind: 'http', path: SEARCH, status: 200, body: '<html>hello</html>', contentType: 'text/html' });
            assert.equal(
                await offersError(dir),
                "yard: cloud 'vast': the Vast API answered the search with no list of offers ('<html>hello</html>'); is clouds.vast.url the API?",
            );
        } finally {
            await d.stop();
        }
    });

    test('a 429 burst is retried until the answer; a storm and a persistent 5xx end in one line', async () => {
        const { dir, d } = await daemon({ url: s.url, env: { VAST_API_KEY: s.apiKey } });
        try {
            let n = searches(s).length;
            await s.script({ kind: 'rate_limit', path: SEARCH, times: 3 });
            const r = await offersJson(dir);
            assert.equal(r.offers.length, 5);
            assert.equal(searches(s).length - n, 4, 'three 429s, then the search that was answered');

            n = searches(s).length;
            await s.script({ kind: 'rate_limit', path: SEARCH, threshold: 2, times: 6 });
            assert.match(
                await offersError(dir),
                /^yard: cloud 'vast': the Vast API kept limiting the rate of the search \(429: API requests too frequent: endpoint threshold=2\) \(6 attempts in \d+\.\d s\); wait a minute and try again$/,
            );
            assert.equal(searches(s).length - n, 6, 'the retries are bounded');

            n = searches(s).length;
            await s.script({ kind: 'server_error', path: SEARCH, status: 502, times: 6 });
            assert.match(
                await offersError(dir),
                /^yard: cloud 'vast': the Vast API failed the search \(502: 502 Bad Gateway\) \(6 attempts in \d+\.\d s\); try again later$/,
            );
            assert.equal(searches(s).length - n, 6);
            // The API is back: so is the answer.
            assert.equal((await offersJson(dir)).offers.length, 5);

            await s.script({ kind: 'http', path: SEARCH, status: 400, body: { success: false, error: 'invalid_args', msg: "unknown operator 'above'" } });
            assert.equal(
                await offersError(dir),
                "yard: cloud 'vast': the Vast API refused the search (400 invalid_args: unknown operator 'above')",
            );
        } finally {
            await d.stop();
        }
    });

    test('a daemon stopped while a search waits between retries stops at once, answering nobody', async () => {
        const { dir, d } = await daemon({ url: s.url, env: { VAST_API_KEY: s.apiKey } });
        const n = searches(s).length;
        await s.script({ kind: 'rate_limit', path: SEARCH, times: 6 });
        const pending = yard(['cloud', 'offers', 'vast'], { stateDir: dir });
        await waitFor(() => searches(s).length > n, { what: 'the first search' });
        await d.stop();
        // Six attempts take at least 3.9 s of waits: the stop did not wait for them.
        assert.ok(searches(s).length - n < 6, `${searches(s).length - n} searches`);
        const r = await pending;
        assert.equal(r.code, 1);
        assert.match(r.stderr, /^yard: the daemon at .* closed the connection before answering\n$/);
        // What is left of the storm is used up here, not by the next test.
        for (let i = 0; i < 6; i++) {
            const res = await fetch(`${s.url}${SEARCH}`, {
                method: 'POST',
                headers: { Authorization: `Bearer ${s.apiKey}`, 'Content-Type': 'application/json' },
                body: '{}',
            });
            await res.text();
            if (res.status === 200) break;
        }
    });

    test('a wrong key, a key variable not set, an unknown cloud: each one line', async () => {
        const wrong = await daemon({ url: s.url, env: { VAST_API_KEY: 'not-the-key' } });
        try {
            const n = searches(s).length;
            assert.equal(
                await offersError(wrong.dir),
                "yard: cloud 'vast': the Vast API refused the key (401 auth_error: Invalid user key); check clouds.vast.api_key",
            );
            assert.equal(searches(s).length - n, 1, 'a 401 is not retried');
            assert.equal(searches(s).at(-1).headers.authorization, 'Bearer not-the-key');
            assert.equal(
                await offersError(wrong.dir, 'nope'),
                "yard: unknown cloud 'nope'; configured clouds: vast",
            );
        } finally {
            await wrong.d.stop();
        }
        const unset = await daemon({ url: s.url, env: { VAST_API_KEY: '' } });
        try {
            assert.equal(
                await offersError(unset.dir),
                "yard: cloud 'vast': environment variable 'VAST_API_KEY' is empty (used in clouds.vast.api_key); set it in the daemon's environment and restart it",
            );
        } finally {
            await unset.d.stop();
        }
    });
});

test('an API nothing answers at: retried, then one line', async () => {
    const url = `http://127.0.0.1:${await freePort()}`;
    const { dir, d } = await daemon({ url, env: { VAST_API_KEY: 'k' } });
    try {
        const line = await offersError(dir);
        const want = new RegExp(
            `^yard: cloud 'vast': cannot reach the Vast API at '${url.replace(/[.]/g, '\\.')}': .*onnect.* \\(6 attempts in \\d+\\.\\d s\\); check clouds\\.vast\\.url and the network$`,
        );
        assert.match(line, want);
    } finally {
        await d.stop();
    }
});

test("a cloud's name is a host: pod add refuses it, a model listing it fails with the rent's reason", async () => {
    const { dir, d } = await daemon({
        url: 'http://127.0.0.1:9',
        models: { m: '{ cmd: "sleep 1000", hosts: [vast] }' },
        env: { VAST_API_KEY: 'k' },
    });
    try {
        const add = await yard(['pod', 'add', 'vast', '--ssh', 'ssh root@192.0.2.1'], { stateDir: dir });
        assert.equal(add.code, 1);
        assert.equal(
            add.stderr,
            "yard: 'vast' is a cloud of the config (clouds.vast); a host name is one pod or one cloud, so name the pod differently\n",
        );
        const start = await yard(['start', 'm', '--wait'], { stateDir: dir, timeoutMs: 60000 });
        assert.notEqual(start.code, 0);
        assert.match(
            start.stderr,
            /cloud 'vast' could not rent a machine for it: cannot reach the Vast API at 'http:\/\/127\.0\.0\.1:9': .*; check clouds\.vast\.url and the network/,
        );
    } finally {
        await d.stop();
    }
});
