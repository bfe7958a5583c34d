#ifndef YARD_BASE_HASH_H
#define YARD_BASE_HASH_H

#include <stddef.h>
#include <stdint.h>

/*
 * FNV-1a: a small, stable, non-cryptographic hash for table slots and for
 * short names derived from longer ones (a cgroup per state dir, a socket per
 * ssh target, a log per model). Stable across builds and machines, so names
 * made from it can be found again; never a secret or a check of integrity.
 *
 * hash_fnv1a: 64 bits over the string s up to its NUL.
 * hash_fnv1a_bytes: 64 bits over s[0..len), which may hold NUL bytes.
 * hash_fnv1a32: 32 bits over the string s up to its NUL.
 */
uint64_t hash_fnv1a(const char *s);
uint64_t hash_fnv1a_bytes(const char *s, size_t len);
uint32_t hash_fnv1a32(const char *s);

#endif
