// An agent's loop through yard alone: the `openai` npm client asks a model (the
// mock engine, which answers a request with tools by calling the first one)
// for a tool call, the agent runs the call's command in a session of the same
// daemon (same listener, same API key), sends the output back as the tool's
// result, and the model's answer quotes it. Real bubblewrap, as in
// sessions.test.mjs.
import { test, after } from 'node:test';
import fs from 'node:fs';
import path from 'node:path';
import OpenAI from 'openai';
import { assert, cleanup, sandboxSkip, tmpdir } from './lib/harness.mjs';
import { routerDaemon, mockCmd } from './lib/router-helpers.mjs';

after(cleanup);

const skip = sandboxSkip();

test('the openai client gets a tool call from a model and the agent runs it in a session', { skip }, async () => {
    const key = 'sk-agent';
    const dir = tmpdir();
    fs.chmodSync(dir, 0o755); // the commands' user must reach the volumes
    const y = await routerDaemon({
        apiKeys: [key],
        models: { agent: { engine: 'vllm', cmd: mockCmd('vllm') } },
        top: `sessions: { user: nobody, root: ${path.join(dir, 'vols')} }\n`,
        dir,
    });
    const client = new OpenAI({ baseURL: `${y.base}/v1`, apiKey: key, maxRetries: 0, timeout: 60000 });
    const auth = { authorization: `Bearer ${key}`, 'content-type': 'application/json' };
    const tools = [
        {
            type: 'function',
            function: {
                name: 'run_shell',
                description: 'Runs a shell command in the conversation\'s session',
                parameters: { type: 'object', properties: { cmd: { type: 'string' } }, required: ['cmd'] },
            },
        },
    ];
    const messages = [{ role: 'user', content: 'echo "hello from $(pwd)" > note.txt; cat note.txt' }];

    // 1. The model asks for the tool.
    const first = await client.chat.completions.create({ model: 'agent', messages, tools });
    const choice = first.choices[0];
    assert.equal(choice.finish_reason, 'tool_calls');
    const call = choice.message.tool_calls[0];
    assert.equal(call.function.name, 'run_shell');
    const args = JSON.parse(call.function.arguments);
    assert.equal(args.cmd, messages[0].content);

    // 2. The agent runs it in its conversation's session, on the same endpoint and key.
    let r = await fetch(`${y.base}/v1/sessions`, { method: 'POST', headers: auth, body: JSON.stringify({ id: 'conv-1' }) });
    assert.equal(r.status, 201, await r.text());
    r = await fetch(`${y.base}/v1/sessions/conv-1/exec`, {
        method: 'POST',
        headers: auth,
        body: JSON.stringify({ cmd: args.cmd, stream: false, timeout_s: 30 }),
    });
    assert.equal(r.status, 200);
    const out = await r.json();
    assert.equal(out.code, 0, out.stderr);
    const volume = path.join(dir, 'vols', 'conv-1');
    assert.equal(out.stdout, `hello from ${volume}\n`);
    assert.equal(fs.readFileSync(path.join(volume, 'note.txt'), 'utf8'), out.stdout);

    // 3. The result goes back as the tool's message; the model's answer has it.
    messages.push(choice.message, { role: 'tool', tool_call_id: call.id, content: out.stdout });
    const second = await client.chat.completions.create({ model: 'agent', messages, tools });
    assert.equal(second.choices[0].finish_reason, 'stop');
    assert.equal(second.choices[0].message.content, `the tool said: hello from ${volume}\n`);

    // The session's file is there for the next turn, through the files API too.
    r = await fetch(`${y.base}/v1/sessions/conv-1/files/note.txt`, { headers: auth });
    assert.equal(r.status, 200);
    assert.equal(await r.text(), out.stdout);
    await y.d.stop();
});
