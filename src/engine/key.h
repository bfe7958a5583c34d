#ifndef YARD_ENGINE_KEY_H
#define YARD_ENGINE_KEY_H

#include <stddef.h>
#include <stdint.h>

/*
 * Engine API keys. Engines listen on 127.0.0.1, where any local user can
 * reach them; yard starts each with its own key (how the engine is told is
 * engine_ops.key_env / key_flag) and sends "Authorization: Bearer KEY" with
 * every request it makes to it. A key is derived, never stored: the
 * HMAC-SHA256 of the instance's model name and port under the daemon's
 * secret (store/secret.h), so the next daemon, adopting a running engine,
 * knows its key, and an engine cannot compute another engine's key.
 */

#define ENGINE_KEY_HEX 64 /* a key is 64 lowercase hex digits */

/* Writes the key of (model, port) under secret into out (ENGINE_KEY_HEX + 1 bytes). */
void engine_key_derive(const unsigned char *secret, size_t secret_len, const char *model, int port,
                       char out[ENGINE_KEY_HEX + 1]);

/* SHA-256 and HMAC-SHA256 (RFC 6234), for the derivation and its tests. */
void engine__sha256(const void *data, size_t len, unsigned char out[32]);
void engine__hmac_sha256(const unsigned char *key, size_t key_len, const void *data, size_t len,
                         unsigned char out[32]);

#endif
