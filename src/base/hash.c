#include "base/hash.h"

#define FNV64_OFFSET 14695981039346656037ULL
#define FNV64_PRIME 1099511628211ULL
#define FNV32_OFFSET 2166136261u
#define FNV32_PRIME 16777619u

uint64_t hash_fnv1a(const char *s)
{
    uint64_t h = FNV64_OFFSET;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * FNV64_PRIME;
    return h;
}

uint64_t hash_fnv1a_bytes(const char *s, size_t len)
{
    uint64_t h = FNV64_OFFSET;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)s[i]) * FNV64_PRIME;
    return h;
}

uint32_t hash_fnv1a32(const char *s)
{
    uint32_t h = FNV32_OFFSET;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * FNV32_PRIME;
    return h;
}
