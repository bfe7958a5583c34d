#ifndef YARD_BASE_SHA256_H
#define YARD_BASE_SHA256_H

#include <stddef.h>
#include <stdint.h>

/*
 * SHA-256 as FIPS 180-4 gives it, fed in pieces: the engine keys' HMAC
 * (engine/key.c) and the checksums of checkpoint images (cloud/ckstore.c),
 * which are gigabytes read a block at a time.
 */
struct sha256 {
    uint32_t h[8];
    unsigned char block[64];
    size_t fill;
    uint64_t total;
};

void sha256_init(struct sha256 *s);
void sha256_update(struct sha256 *s, const void *data, size_t len);
/* The digest of what was fed; s must be initialised again before another use. */
void sha256_final(struct sha256 *s, unsigned char out[32]);
/* The 32 bytes of a digest as 64 lowercase hex digits and a NUL. */
void sha256_hex(const unsigned char digest[32], char out[65]);

#endif
