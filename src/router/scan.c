#include "router/scan.h"

#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <string.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/*
 * The scan walks the members of the top-level object and touches each
 * skipped value as little as it can: a string is crossed to its closing
 * quote, a container by counting brackets outside the strings inside it.
 * Skipped values are only checked for balance, not validated; the
 * key and the value of "model" are decoded and checked in full. The walk
 * always goes on to the object's closing brace, to find a key read here
 * that appears twice.
 *
 * The value must also be a string a route can be looked up by: a "\u0000"
 * escape, a raw control byte, a lone surrogate or invalid UTF-8 in it gives
 * -EINVAL (jansson rejects the same bodies).
 */

static int scan__is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static const char *scan__skip_ws(const char *p, const char *end)
{
    while (p < end && scan__is_ws(*p))
        p++;
    return p;
}

/*
 * Skipping works on 64-byte blocks, as simdjson does: each block becomes
 * bitmasks (bit i for byte i) of its quotes, backslashes and brackets, and
 * escapes and string state are worked out on those masks, so the cost per
 * byte is the same however many strings, escapes or brackets a value holds.
 * The last partial block is copied into a buffer padded with spaces, so
 * nothing past the body is ever read.
 */
enum { SCAN_BLOCK = 64 };

struct scan__block {
    uint64_t quote;
    uint64_t backslash;
    uint64_t open;  /* { or [ */
    uint64_t close; /* } or ] */
};

/*
 * Fills the masks of the 64 bytes at p. Setting bit 5 folds '[' onto '{'
 * and ']' onto '}', so two comparisons find all four brackets.
 */
static inline __attribute__((always_inline)) void scan__classify(const char *p,
                                                                 struct scan__block *b)
{
#if defined(__SSE2__)
    const __m128i quote = _mm_set1_epi8('"');
    const __m128i backslash = _mm_set1_epi8('\\');
    const __m128i open = _mm_set1_epi8('{');
    const __m128i close = _mm_set1_epi8('}');
    const __m128i fold = _mm_set1_epi8(0x20);
    __m128i v[4], f[4];

    for (int i = 0; i < 4; i++) {
        v[i] = _mm_loadu_si128((const __m128i *)(const void *)(p + 16 * i));
        f[i] = _mm_or_si128(v[i], fold);
    }
#define SCAN__MASK(x, c)                                                                           \
    ((uint64_t)(uint16_t)_mm_movemask_epi8(_mm_cmpeq_epi8(x[0], c)) |                              \
     (uint64_t)(uint16_t)_mm_movemask_epi8(_mm_cmpeq_epi8(x[1], c)) << 16 |                        \
     (uint64_t)(uint16_t)_mm_movemask_epi8(_mm_cmpeq_epi8(x[2], c)) << 32 |                        \
     (uint64_t)(uint16_t)_mm_movemask_epi8(_mm_cmpeq_epi8(x[3], c)) << 48)
    b->quote = SCAN__MASK(v, quote);
    b->backslash = SCAN__MASK(v, backslash);
    b->open = SCAN__MASK(f, open);
    b->close = SCAN__MASK(f, close);
#undef SCAN__MASK
#else
    b->quote = b->backslash = b->open = b->close = 0;
    for (int i = 0; i < SCAN_BLOCK; i++) {
        unsigned char c = (unsigned char)p[i], f = c | 0x20;
        b->quote |= (uint64_t)(c == '"') << i;
        b->backslash |= (uint64_t)(c == '\\') << i;
        b->open |= (uint64_t)(f == '{') << i;
        b->close |= (uint64_t)(f == '}') << i;
    }
#endif
}

/*
 * The block at off in p[0..n), or its tail copied into pad when fewer than
 * 64 bytes are left.
 */
static const char *scan__block_at(const char *p, size_t n, size_t off, char *pad)
{
    if (n - off >= SCAN_BLOCK)
        return p + off;
    memset(pad, ' ', SCAN_BLOCK);
    memcpy(pad, p + off, n - off);
    return pad;
}

/*
 * The mask of bytes escaped by a backslash: the byte after each odd-length
 * run of backslashes. *carry is 1 when the previous block ended inside a
 * run that escapes this block's first byte, and is updated for the next.
 */
static inline uint64_t scan__escaped(uint64_t backslash, uint64_t *carry)
{
    const uint64_t even = 0x5555555555555555ULL;

    backslash &= ~*carry;
    uint64_t follows = backslash << 1 | *carry;
    uint64_t odd_starts = backslash & ~even & ~follows;
    uint64_t sum = odd_starts + backslash;
    *carry = sum < odd_starts;
    return (even ^ (sum << 1)) & follows;
}

/*
 * The bits set in x. __builtin_popcountll is a call into libgcc on a CPU
 * without the instruction (the build targets plain x86-64).
 */
static inline int scan__popcount(uint64_t x)
{
#if defined(__POPCNT__)
    return __builtin_popcountll(x);
#else
    x -= x >> 1 & 0x5555555555555555ULL;
    x = (x & 0x3333333333333333ULL) + (x >> 2 & 0x3333333333333333ULL);
    x = (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0FULL;
    return (int)((x * 0x0101010101010101ULL) >> 56);
#endif
}

/* Bit i set when an odd number of bits at or below i are set in x. */
static inline uint64_t scan__prefix_xor(uint64_t x)
{
    x ^= x << 1;
    x ^= x << 2;
    x ^= x << 4;
    x ^= x << 8;
    x ^= x << 16;
    x ^= x << 32;
    return x;
}

/* How far scan__string_end looks byte by byte before it classifies blocks. */
#define SCAN_SHORT_STRING 32

/* scan__string_end by blocks of 64 bytes, escapes and all. */
static __attribute__((noinline)) const char *scan__string_end_blocks(const char *p, const char *end)
{
    size_t n = (size_t)(end - p);
    uint64_t carry = 0;
    char pad[SCAN_BLOCK];

    for (size_t off = 0; off < n; off += SCAN_BLOCK) {
        struct scan__block b;
        scan__classify(scan__block_at(p, n, off, pad), &b);
        uint64_t quotes = b.quote & ~scan__escaped(b.backslash, &carry);
        if (quotes)
            return p + off + __builtin_ctzll(quotes);
    }
    return NULL;
}

/* p is just past an opening quote. Returns the closing quote, or NULL when the body ends first. */
static inline const char *scan__string_end(const char *p, const char *end)
{
    /*
     * Keys and most short values end within a few bytes, without an escape:
     * a quote found before any backslash closes the string, without the
     * blocks' setup (a 64-byte classification for a five-letter key).
     */
    const char *stop = end - p > SCAN_SHORT_STRING ? p + SCAN_SHORT_STRING : end;
    for (const char *q = p; q < stop && *q != '\\'; q++) {
        if (*q == '"')
            return q;
    }
    return scan__string_end_blocks(p, end);
}

/*
 * The block q of a container, classified in b, with many brackets outside
 * the strings: returns the index of the bracket that takes *depth to zero
 * (the container's end), or -1 with *depth moved by the block's brackets.
 */
#if defined(__SSE2__)
/*
 * Sixteen bytes at a time: the block's bytes become +1 a close, -1 an open,
 * 0 anything else or inside a string, and are summed running over the block
 * in four shifted adds per sixteen (the sums stay within 64 either way, so
 * they fit a signed byte); the first sum that reaches the depth is the end.
 * No step waits on the depth, so a block costs the same whatever its
 * brackets.
 */
static inline __m128i scan__expand16(unsigned m)
{
    const __m128i bits = _mm_setr_epi8(1, 2, 4, 8, 16, 32, 64, -128, 1, 2, 4, 8, 16, 32, 64, -128);
    __m128i v = _mm_cvtsi32_si128((int)(m & 0xFFFF));
    v = _mm_unpacklo_epi8(v, v);  /* lo lo hi hi */
    v = _mm_unpacklo_epi16(v, v); /* lo x4, hi x4 */
    v = _mm_unpacklo_epi32(v, v); /* lo x8, hi x8 */
    return _mm_cmpeq_epi8(_mm_and_si128(v, bits), bits);
}

static int scan__block_end(const char *q, const struct scan__block *b, uint64_t strings,
                           uint64_t *depth)
{
    const __m128i open = _mm_set1_epi8('{');
    const __m128i close = _mm_set1_epi8('}');
    const __m128i fold = _mm_set1_epi8(0x20);
    /* Deeper than a block has bytes, nothing here can reach zero. */
    const __m128i reach = _mm_set1_epi8((char)(*depth > SCAN_BLOCK ? 127 : *depth - 1));
    const int in_strings = ((b->open | b->close) & strings) != 0;
    __m128i carry = _mm_setzero_si128();
    uint64_t hits = 0;

    for (int i = 0; i < 4; i++) {
        __m128i f =
            _mm_or_si128(_mm_loadu_si128((const __m128i *)(const void *)(q + 16 * i)), fold);
        /* cmpeq gives -1 for a match: -1 - 0 for an open, 0 - -1 for a close. */
        __m128i x = _mm_sub_epi8(_mm_cmpeq_epi8(f, open), _mm_cmpeq_epi8(f, close));
        if (in_strings)
            x = _mm_andnot_si128(scan__expand16((unsigned)(strings >> 16 * i)), x);
        x = _mm_add_epi8(x, _mm_slli_si128(x, 1));
        x = _mm_add_epi8(x, _mm_slli_si128(x, 2));
        x = _mm_add_epi8(x, _mm_slli_si128(x, 4));
        x = _mm_add_epi8(x, _mm_slli_si128(x, 8));
        x = _mm_add_epi8(x, carry);
        hits |= (uint64_t)(uint16_t)_mm_movemask_epi8(_mm_cmpgt_epi8(x, reach)) << 16 * i;
        /* The last byte's sum, in every byte, carries into the next sixteen. */
        carry = _mm_unpackhi_epi8(x, x);
        carry = _mm_shufflehi_epi16(carry, 0xFF);
        carry = _mm_unpackhi_epi64(carry, carry);
    }
    if (hits)
        return __builtin_ctzll(hits);
    *depth -= (uint64_t)(int64_t)(signed char)_mm_cvtsi128_si32(carry);
    return -1;
}
#else
/*
 * For four bytes whose opens are the bits of o and closes the bits of c
 * (table index o << 4 | c): net is the change in depth across them, drop the
 * most the depth falls below its starting value at any of them. Entries
 * where o and c overlap are never looked up.
 */
struct scan__nibble {
    signed char net;
    signed char drop;
};

#define SCAN__O(x, j) ((int)((x) >> (4 + (j)) & 1))
#define SCAN__C(x, j) ((int)((x) >> (j)&1))
#define SCAN__S(x, j) (SCAN__C(x, j) - SCAN__O(x, j))
#define SCAN__P0(x) SCAN__S(x, 0)
#define SCAN__P1(x) (SCAN__P0(x) + SCAN__S(x, 1))
#define SCAN__P2(x) (SCAN__P1(x) + SCAN__S(x, 2))
#define SCAN__P3(x) (SCAN__P2(x) + SCAN__S(x, 3))
#define SCAN__MAX(a, b) ((a) > (b) ? (a) : (b))
#define SCAN__DROP(x)                                                                              \
    SCAN__MAX(SCAN__MAX(SCAN__P0(x), SCAN__P1(x)), SCAN__MAX(SCAN__P2(x), SCAN__P3(x)))
#define SCAN__E(x)                                                                                 \
    {                                                                                              \
        (signed char)-SCAN__P3(x), (signed char)SCAN__MAX(0, SCAN__DROP(x))                        \
    }
#define SCAN__E4(x) SCAN__E(x), SCAN__E(x + 1), SCAN__E(x + 2), SCAN__E(x + 3)
#define SCAN__E16(x) SCAN__E4(x), SCAN__E4(x + 4), SCAN__E4(x + 8), SCAN__E4(x + 12)
#define SCAN__E64(x) SCAN__E16(x), SCAN__E16(x + 16), SCAN__E16(x + 32), SCAN__E16(x + 48)

static const struct scan__nibble scan__nibbles[256] = {SCAN__E64(0u), SCAN__E64(64u),
                                                       SCAN__E64(128u), SCAN__E64(192u)};

/*
 * Four bytes at a time: the table says how far their brackets can lower the
 * depth, and only four bytes that may reach zero are walked one by one.
 */
static int scan__block_end(const char *q, const struct scan__block *b, uint64_t strings,
                           uint64_t *depth)
{
    uint64_t opens = b->open & ~strings, closes = b->close & ~strings;

    for (int k = 0; k < SCAN_BLOCK; k += 4) {
        unsigned o = (unsigned)(opens >> k) & 15, c = (unsigned)(closes >> k) & 15;
        const struct scan__nibble *t = &scan__nibbles[o << 4 | c];
        if (*depth > (uint64_t)t->drop) {
            *depth += (uint64_t)(int64_t)t->net;
            continue;
        }
        for (int i = 0; i < 4; i++) {
            if (o >> i & 1)
                ++*depth;
            else if (c >> i & 1 && --*depth == 0)
                return k + i;
        }
    }
    return -1;
}
#endif

/*
 * p is just past an opening bracket. Returns the byte after the matching
 * close, or NULL. Brackets inside strings do not count; the kinds of
 * bracket are not matched against each other.
 */
static const char *scan__container_end(const char *p, const char *end)
{
    size_t n = (size_t)(end - p);
    uint64_t depth = 1, carry = 0, in_string = 0;
    char pad[SCAN_BLOCK];

    for (size_t off = 0; off < n; off += SCAN_BLOCK) {
        struct scan__block b;
        const char *q = scan__block_at(p, n, off, pad);
        scan__classify(q, &b);
        uint64_t quotes = b.quote & ~scan__escaped(b.backslash, &carry);
        uint64_t strings = scan__prefix_xor(quotes) ^ in_string;
        in_string = 0 - (strings >> 63);
        uint64_t opens = b.open & ~strings;
        uint64_t closes = b.close & ~strings;
        if (!closes) {
            if (opens)
                depth += (uint64_t)scan__popcount(opens);
            continue;
        }
        /* This block may close the container. A few brackets are walked in order. */
        uint64_t all = opens | closes;
        if (scan__popcount(all) <= 8) {
            for (; all; all &= all - 1) {
                int i = __builtin_ctzll(all);
                if (opens >> i & 1)
                    depth++;
                else if (--depth == 0)
                    return p + off + i + 1;
            }
            continue;
        }
        int i = scan__block_end(q, &b, strings, &depth);
        if (i >= 0)
            return p + off + i + 1;
    }
    return NULL;
}

static const char *scan__literal_end(const char *p, const char *end, const char *word)
{
    size_t n = strlen(word);

    if ((size_t)(end - p) < n || memcmp(p, word, n) != 0)
        return NULL;
    return p + n;
}

static const char *scan__number_end(const char *p, const char *end)
{
    const char *start = p;

    while (p < end && ((*p >= '0' && *p <= '9') || *p == '-' || *p == '+' || *p == '.' ||
                       *p == 'e' || *p == 'E'))
        p++;
    return p == start ? NULL : p;
}

/* p is at the first byte of a value. Returns the byte after it, or NULL. */
static const char *scan__value_end(const char *p, const char *end)
{
    switch (*p) {
    case '"':
        p = scan__string_end(p + 1, end);
        return p ? p + 1 : NULL;
    case '{':
    case '[':
        return scan__container_end(p + 1, end);
    case 't':
        return scan__literal_end(p, end, "true");
    case 'f':
        return scan__literal_end(p, end, "false");
    case 'n':
        return scan__literal_end(p, end, "null");
    default:
        return scan__number_end(p, end);
    }
}

static int scan__hex4(const char *p, unsigned *v)
{
    unsigned x = 0;

    for (int i = 0; i < 4; i++) {
        char c = p[i];
        x <<= 4;
        if (c >= '0' && c <= '9')
            x |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            x |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            x |= (unsigned)(c - 'A' + 10);
        else
            return -EINVAL;
    }
    *v = x;
    return 0;
}

static size_t scan__utf8_encode(unsigned cp, char *o)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/*
 * Decodes the contents of a string, s[0..n) between its quotes, into out,
 * writing at most cap bytes (no NUL). Sets *outn to the decoded length.
 * Returns 0, -EINVAL for a bad escape, a lone surrogate or a raw control
 * byte, or -ENAMETOOLONG when more than cap bytes would be written.
 */
static int scan__unescape(const char *s, size_t n, char *out, size_t cap, size_t *outn)
{
    size_t i = 0, o = 0;

    while (i < n) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20)
            return -EINVAL;
        if (c != '\\') {
            if (o >= cap)
                return -ENAMETOOLONG;
            out[o++] = (char)c;
            i++;
            continue;
        }
        if (n - i < 2)
            return -EINVAL;
        char e;
        switch (s[i + 1]) {
        case '"':
            e = '"';
            break;
        case '\\':
            e = '\\';
            break;
        case '/':
            e = '/';
            break;
        case 'b':
            e = '\b';
            break;
        case 'f':
            e = '\f';
            break;
        case 'n':
            e = '\n';
            break;
        case 'r':
            e = '\r';
            break;
        case 't':
            e = '\t';
            break;
        case 'u': {
            unsigned cp, lo;
            if (n - i < 6 || scan__hex4(s + i + 2, &cp) < 0)
                return -EINVAL;
            i += 6;
            if (cp >= 0xDC00 && cp <= 0xDFFF)
                return -EINVAL;
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                if (n - i < 6 || s[i] != '\\' || s[i + 1] != 'u' ||
                    scan__hex4(s + i + 2, &lo) < 0 || lo < 0xDC00 || lo > 0xDFFF)
                    return -EINVAL;
                i += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            char enc[4];
            size_t k = scan__utf8_encode(cp, enc);
            if (cap - o < k)
                return -ENAMETOOLONG;
            memcpy(out + o, enc, k);
            o += k;
            continue;
        }
        default:
            return -EINVAL;
        }
        if (o >= cap)
            return -ENAMETOOLONG;
        out[o++] = e;
        i += 2;
    }
    *outn = o;
    return 0;
}

/*
 * Whether the escapes of s[0..n) (a string's contents) all decode, as
 * scan__unescape decides, whatever their length: 0 or -EINVAL.
 */
static int scan__escapes_valid(const char *s, size_t n)
{
    char out[8];
    size_t outn;
    for (size_t i = 0; i < n;) {
        const char *bs = memchr(s + i, '\\', n - i);
        size_t plain = bs ? (size_t)(bs - (s + i)) : n - i;
        for (size_t k = 0; k < plain; k++)
            if ((unsigned char)s[i + k] < 0x20)
                return -EINVAL;
        i += plain;
        if (i == n)
            break;
        /* One escape (a surrogate pair is two) decodes into at most 4 bytes. */
        size_t len = n - i >= 2 && s[i + 1] == 'u' ? 6 : 2;
        if (len == 6 && n - i >= 12 && s[i + 6] == '\\' && s[i + 7] == 'u') {
            unsigned cp;
            if (scan__hex4(s + i + 2, &cp) == 0 && cp >= 0xD800 && cp <= 0xDBFF)
                len = 12;
        }
        if (len > n - i || scan__unescape(s + i, len, out, sizeof out, &outn) < 0)
            return -EINVAL;
        i += len;
    }
    return 0;
}

/* Whether s[0..n) is well-formed UTF-8: shortest forms, no surrogates, at most U+10FFFF. */
static int scan__utf8_valid(const unsigned char *s, size_t n)
{
    size_t i = 0;

    while (i < n) {
        unsigned c = s[i], cp, min;
        size_t k;
        if (c < 0x80) {
            i++;
            continue;
        }
        if ((c & 0xE0) == 0xC0) {
            k = 1, cp = c & 0x1F, min = 0x80;
        } else if ((c & 0xF0) == 0xE0) {
            k = 2, cp = c & 0x0F, min = 0x800;
        } else if ((c & 0xF8) == 0xF0) {
            k = 3, cp = c & 0x07, min = 0x10000;
        } else {
            return 0;
        }
        if (n - i - 1 < k)
            return 0;
        for (size_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xC0) != 0x80)
                return 0;
            cp = (cp << 6) | (s[i + j] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        i += k + 1;
    }
    return 1;
}

/*
 * Whether the key s[0..n) (between its quotes) is `want`. A key without a
 * backslash is compared as it stands; one with escapes is decoded first, as
 * "mod\u0065l" names the same member as "model". Returns 1 or 0; the
 * caller has refused keys whose escapes do not decode.
 */
static int scan__key_is(const char *s, size_t n, int escaped, const char *want)
{
    if (!escaped) /* the first byte settles most pairs, before the lengths */
        return n > 0 && s[0] == want[0] && n == strlen(want) && memcmp(s, want, n) == 0;
    size_t wn = strlen(want);
    char key[64];
    size_t kn;

    /* Every letter spelled as \uXXXX is the longest form. */
    if (wn >= sizeof key || n > wn * 6)
        return 0;
    /* The key's escapes are valid (scan__members checked): a failure is a longer key. */
    if (scan__unescape(s, n, key, wn + 1, &kn) < 0)
        return 0;
    return kn == wn && memcmp(key, want, wn) == 0;
}

/* p is at the first byte of the "model" value. */
static int scan__read_model(const char *p, const char *end, char *out, size_t outlen)
{
    switch (*p) {
    case '"':
        break;
    case '{':
    case '[':
    case 't':
    case 'f':
    case 'n':
    case '-':
        return -EMEDIUMTYPE;
    default:
        return *p >= '0' && *p <= '9' ? -EMEDIUMTYPE : -EINVAL;
    }

    const char *s = p + 1;
    const char *q = scan__string_end(s, end);
    if (!q)
        return -EINVAL;
    if (outlen == 0)
        return -ENAMETOOLONG;

    size_t cap = outlen - 1 < INT_MAX ? outlen - 1 : INT_MAX;
    size_t n;
    int rc = scan__unescape(s, (size_t)(q - s), out, cap, &n);
    if (rc < 0)
        return rc;
    if (memchr(out, '\0', n) || !scan__utf8_valid((const unsigned char *)out, n))
        return -EINVAL;
    out[n] = '\0';
    return (int)n;
}

/* A top-level key the caller reads, and where its value starts (NULL while not seen). */
struct scan__want {
    const char *key;
    const char *value;
};

/*
 * Walks every member of the top-level object, to its closing brace, and
 * sets want[i].value to the first byte of the value of key want[i].key.
 * A wanted key seen twice is refused: a parser that keeps the last member
 * (Python's, the engines') would read another body than the one routed.
 * Returns 0 (keys not seen keep a NULL value), -EINVAL for a body that is
 * not an object or is malformed at the top level, or -EEXIST with *dup set
 * to the repeated key.
 */
static int scan__members(const char *body, size_t len, struct scan__want *want, size_t n_want,
                         const char **dup)
{
    const char *p = body, *end = body + len;

    if (len >= 3 && memcmp(p, "\xEF\xBB\xBF", 3) == 0)
        p += 3;
    p = scan__skip_ws(p, end);
    if (p == end || *p != '{')
        return -EINVAL;
    p = scan__skip_ws(p + 1, end);
    if (p < end && *p == '}')
        return 0;

    for (;;) {
        if (p == end || *p != '"')
            return -EINVAL;
        const char *k = p + 1;
        const char *k_end = scan__string_end(k, end);
        if (!k_end)
            return -EINVAL;
        /*
         * A key that does not decode is refused whichever keys are wanted: the
         * comparison stops at the wanted key's length and would see a bad escape
         * late in a key for one wanted key and not for another.
         */
        size_t k_len = (size_t)(k_end - k);
        int escaped = memchr(k, '\\', k_len) != NULL;
        if (escaped && scan__escapes_valid(k, k_len) < 0)
            return -EINVAL;
        struct scan__want *hit = NULL;
        for (size_t i = 0; i < n_want; i++) {
            if (scan__key_is(k, k_len, escaped, want[i].key)) {
                hit = &want[i];
                break;
            }
        }

        p = scan__skip_ws(k_end + 1, end);
        if (p == end || *p != ':')
            return -EINVAL;
        p = scan__skip_ws(p + 1, end);
        if (p == end)
            return -EINVAL;
        if (hit) {
            if (hit->value) {
                if (dup)
                    *dup = hit->key;
                return -EEXIST;
            }
            hit->value = p;
        }

        p = scan__value_end(p, end);
        if (!p)
            return -EINVAL;
        p = scan__skip_ws(p, end);
        if (p == end)
            return -EINVAL;
        if (*p == '}')
            return 0;
        if (*p != ',')
            return -EINVAL;
        p = scan__skip_ws(p + 1, end);
    }
}

/* The one top-level member key: 0 with *value set, -ENOENT, -EINVAL or -EEXIST. */
static int scan__find(const char *body, size_t len, const char *key, const char **value)
{
    struct scan__want w = {key, NULL};
    int rc = scan__members(body, len, &w, 1, NULL);
    if (rc < 0)
        return rc;
    if (!w.value)
        return -ENOENT;
    *value = w.value;
    return 0;
}

static int scan__model(const char *body, size_t len, char *out, size_t outlen)
{
    const char *v;
    int rc = scan__find(body, len, "model", &v);
    return rc < 0 ? rc : scan__read_model(v, body + len, out, outlen);
}

int router_scan_member(const char *body, size_t len, const char *key, const char **value,
                       size_t *value_len)
{
    const char *v = NULL;
    int rc = body && len ? scan__find(body, len, key, &v) : -EINVAL;
    if (rc < 0)
        return rc;
    /* The walk saw the whole object, so the value is well delimited. */
    const char *e = scan__value_end(v, body + len);
    *value = v;
    *value_len = (size_t)(e - v);
    return 0;
}

int router_scan_true(const char *body, size_t len, const char *key)
{
    const char *v;
    size_t n;
    return router_scan_member(body, len, key, &v, &n) == 0 && n == 4 && memcmp(v, "true", 4) == 0;
}

/* A JSON integer's value, 0 for anything else (a real, a string, out of range): what jansson's
 * json_integer_value gives. */
static uint64_t scan__count(const char *v, const char *end)
{
    if (!v || v == end || *v == '-')
        return 0; /* absent, or negative: nothing counted */
    uint64_t n = 0;
    const char *p = v;
    for (; p < end && *p >= '0' && *p <= '9'; p++) {
        if (n > (UINT64_MAX - 9) / 10)
            return 0;
        n = n * 10 + (uint64_t)(*p - '0');
    }
    if (p == v || (v[0] == '0' && p - v > 1))
        return 0; /* no digit, or a leading zero JSON does not allow */
    return p < end && (*p == '.' || *p == 'e' || *p == 'E') ? 0 : n;
}

/* How far from the end of an answer usage_at_end looks for its key. */
#define SCAN_USAGE_TAIL 4096

/*
 * The usage an answer ends with, as engines write it: ..., "usage": {...} }
 * and nothing after but white space. In JSON a member followed only by the
 * closing brace and the end of the text is the outermost object's, and a
 * "usage" after '{' or ',' whose quote no backslash escapes is a key of its
 * own: what the walk of the whole answer finds, without the walk (it was a
 * fifth of a proxied request's instructions). NULL where the answer does not
 * end so: the walk decides. *ulen: the usage object's length.
 */
static const char *usage_at_end(const char *body, size_t len, size_t *ulen)
{
    const char *end = body + len;
    while (end > body && scan__is_ws(end[-1]))
        end--;
    if (end == body || end[-1] != '}')
        return NULL;
    end--; /* the closing brace of the outermost object */
    size_t n = (size_t)(end - body), stop = n > SCAN_USAGE_TAIL ? n - SCAN_USAGE_TAIL : 0;
    const char *k = NULL;
    /* the quotes from the end back: a "usage" key is one of them */
    for (size_t i = n >= 7 ? n - 7 + 1 : 0; i > stop;) {
        const char *q = memrchr(body + stop, '"', i - stop);
        if (!q)
            break;
        if (memcmp(q, "\"usage\"", 7) == 0) {
            k = q;
            break;
        }
        i = (size_t)(q - body);
    }
    if (!k)
        return NULL;
    size_t bs = 0;
    while (k - bs > body && k[-1 - (long)bs] == '\\')
        bs++;
    const char *b = k;
    while (b > body && scan__is_ws(b[-1]))
        b--;
    if (bs % 2 || b == body || (b[-1] != '{' && b[-1] != ','))
        return NULL;
    const char *p = scan__skip_ws(k + 7, end);
    if (p >= end || *p != ':')
        return NULL;
    p = scan__skip_ws(p + 1, end);
    if (p >= end || *p != '{')
        return NULL;
    const char *e = scan__value_end(p, end);
    if (!e || scan__skip_ws(e, end) != end)
        return NULL;
    *ulen = (size_t)(e - p);
    return p;
}

int router_scan_usage(const char *body, size_t len, uint64_t *prompt, uint64_t *completion)
{
    const char *u;
    size_t ulen;
    *prompt = *completion = 0;
    if (!body || !len)
        return -ENOENT;
    u = usage_at_end(body, len, &ulen);
    if (!u) {
        if (!memmem(body, len, "\"usage\"", 7))
            return -ENOENT;
        int rc = router_scan_member(body, len, "usage", &u, &ulen);
        if (rc < 0)
            return rc;
    }
    int rc;
    struct scan__want w[] = {{"prompt_tokens", NULL},
                             {"input_tokens", NULL},
                             {"completion_tokens", NULL},
                             {"output_tokens", NULL}};
    const char *dup;
    if (ulen == 0 || *u != '{')
        return -EINVAL;
    rc = scan__members(u, ulen, w, 4, &dup);
    if (rc < 0)
        return rc;
    const char *end = u + ulen;
    *prompt = scan__count(w[0].value, end) + scan__count(w[1].value, end);
    *completion = scan__count(w[2].value, end) + scan__count(w[3].value, end);
    return 0;
}

int router_scan_request(const char *body, size_t len, char *model, size_t model_len, int *stream,
                        const char **dup)
{
    struct scan__want w[] = {{"model", NULL}, {"stream", NULL}};
    int rc = body && len ? scan__members(body, len, w, 2, dup) : -EINVAL;

    *stream = 0;
    if (rc == 0 && !w[0].value)
        rc = -ENOENT;
    if (rc == 0)
        rc = scan__read_model(w[0].value, body + len, model, model_len);
    if (rc < 0) {
        if (model_len > 0)
            model[0] = '\0';
        return rc;
    }
    /* The walk crossed the value, so one starting with 't' is exactly true. */
    *stream = w[1].value && *w[1].value == 't';
    return rc;
}

int router_scan_model(const char *body, size_t len, char *out, size_t outlen)
{
    int rc = body && len ? scan__model(body, len, out, outlen) : -EINVAL;

    /* A failed scan leaves out empty, never a partly decoded value. */
    if (rc < 0 && outlen > 0)
        out[0] = '\0';
    return rc;
}
