// A daemon with one cloud `vast` for the cloud tests (cloud-offers, cloud-rent,
// cloud-faults, cloud-engine-fail), and what they read of the Vast stand-in's
// state (lib/vast-standin.mjs).

import { tmpdir, freePort, writeConfig, startDaemon } from './harness.mjs';

/**
 * Starts a daemon whose config has the cloud `vast` at url, with the key at
 * sshKey, disk (null: none), cloud (more keys of the cloud, as YAML lines at 4
 * spaces) and models (the YAML text from `models:` on, or ''). Returns
 * { dir, d, config, port }.
 */
export async function cloudDaemon({ url, sshKey, dir = tmpdir(), port = null, disk = '40GB', cloud = '', models = '', env = {} }) {
    port ??= await freePort();
    const yaml =
        `listen: 127.0.0.1:${port}\n` +
        'clouds:\n' +
        '  vast:\n' +
        '    provider: vast\n' +
        '    api_key: ${env.VAST_API_KEY}\n' +
        `    url: ${url}\n` +
        '    max_price: 1.5\n' +
        '    image: vllm/vllm-openai:latest\n' +
        (disk ? `    disk: ${disk}\n` : '') +
        `    ssh_key: ${sshKey}\n` +
        cloud +
        models;
    const config = writeConfig(dir, yaml);
    const d = await startDaemon({ config, stateDir: dir, env });
    return { dir, d, config, port };
}

/** cloudDaemon against the stand-in s: its URL, its client key, its API key. */
export const standinDaemon = (s, opts = {}) =>
    cloudDaemon({ url: s.url, sshKey: s.clientKey.path, env: { VAST_API_KEY: s.apiKey }, ...opts });

/** The creates the stand-in s was sent. */
export const creates = (s) => s.state.requests.filter((r) => r.method === 'PUT' && r.path.startsWith('/api/v0/asks/'));

/** The stand-in's instances not destroyed. */
export const alive = (s) => [...s.state.instances.values()].filter((i) => !i.destroyed);
