#include "engine/key.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/sha256.h"

void engine__sha256(const void *data, size_t len, unsigned char out[32])
{
    struct sha256 s;
    sha256_init(&s);
    sha256_update(&s, data, len);
    sha256_final(&s, out);
}

void engine__hmac_sha256(const unsigned char *key, size_t key_len, const void *data, size_t len,
                         unsigned char out[32])
{
    unsigned char k[64] = {0}, pad[64], inner[32];
    struct sha256 s;
    if (key_len > 64)
        engine__sha256(key, key_len, k);
    else
        memcpy(k, key, key_len);
    for (int i = 0; i < 64; i++)
        pad[i] = k[i] ^ 0x36;
    sha256_init(&s);
    sha256_update(&s, pad, 64);
    sha256_update(&s, data, len);
    sha256_final(&s, inner);
    for (int i = 0; i < 64; i++)
        pad[i] = k[i] ^ 0x5c;
    sha256_init(&s);
    sha256_update(&s, pad, 64);
    sha256_update(&s, inner, 32);
    sha256_final(&s, out);
    memset(k, 0, sizeof k);
    memset(pad, 0, sizeof pad);
}

void engine_key_derive(const unsigned char *secret, size_t secret_len, const char *model, int port,
                       char out[ENGINE_KEY_HEX + 1])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char mac[32];
    /* "yard engine key", the name and the port, NUL-separated: no two inputs read the same */
    static const char label[] = "yard engine key";
    char num[16];
    size_t nlen = strlen(model);
    int plen = snprintf(num, sizeof num, "%d", port);
    size_t len = sizeof label + nlen + 1 + (size_t)plen;
    char *msg = xmalloc(len);
    memcpy(msg, label, sizeof label);
    memcpy(msg + sizeof label, model, nlen + 1);
    memcpy(msg + sizeof label + nlen + 1, num, (size_t)plen);
    engine__hmac_sha256(secret, secret_len, msg, len, mac);
    free(msg);
    for (int i = 0; i < 32; i++) {
        out[2 * i] = hex[mac[i] >> 4];
        out[2 * i + 1] = hex[mac[i] & 15];
    }
    out[ENGINE_KEY_HEX] = '\0';
}
