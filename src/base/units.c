#include "base/units.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TEN_YEARS_MS (10ull * 365 * 24 * 3600 * 1000)

int units_parse_duration(const char *s, uint64_t *ms)
{
    if (!s || !*s)
        return -EINVAL;
    uint64_t total = 0;
    const char *p = s;
    int parts = 0;
    while (*p) {
        if (!isdigit((unsigned char)*p))
            return -EINVAL;
        errno = 0;
        char *end;
        unsigned long long v = strtoull(p, &end, 10);
        if (errno == ERANGE || v > TEN_YEARS_MS)
            return -ERANGE;
        p = end;
        uint64_t mult;
        if (*p == '\0') {
            if (parts > 0)
                return -EINVAL;
            mult = 1000;
        } else if (strncmp(p, "ms", 2) == 0) {
            mult = 1, p += 2;
        } else if (*p == 's') {
            mult = 1000, p++;
        } else if (*p == 'm') {
            mult = 60000, p++;
        } else if (*p == 'h') {
            mult = 3600000, p++;
        } else if (*p == 'd') {
            mult = 86400000, p++;
        } else {
            return -EINVAL;
        }
        if (v > TEN_YEARS_MS / mult)
            return -ERANGE;
        total += v * mult;
        if (total > TEN_YEARS_MS)
            return -ERANGE;
        parts++;
    }
    *ms = total;
    return 0;
}

static const struct {
    const char *name;
    double mult;
} size_units[] = {
    {"B", 1},
    {"KB", 1e3},
    {"MB", 1e6},
    {"GB", 1e9},
    {"TB", 1e12},
    {"KiB", 1024.0},
    {"MiB", 1024.0 * 1024},
    {"GiB", 1024.0 * 1024 * 1024},
    {"TiB", 1024.0 * 1024 * 1024 * 1024},
    {"K", 1024.0},
    {"M", 1024.0 * 1024},
    {"G", 1024.0 * 1024 * 1024},
    {"T", 1024.0 * 1024 * 1024 * 1024},
};

int units_parse_size(const char *s, uint64_t *bytes)
{
    if (!s || !isdigit((unsigned char)*s))
        return -EINVAL;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno == ERANGE || !isfinite(v) || v < 0)
        return -ERANGE;
    while (*end == ' ')
        end++;
    double mult = 1;
    if (*end) {
        size_t i;
        for (i = 0; i < sizeof size_units / sizeof size_units[0]; i++)
            if (strcmp(end, size_units[i].name) == 0)
                break;
        if (i == sizeof size_units / sizeof size_units[0])
            return -EINVAL;
        mult = size_units[i].mult;
    }
    double b = v * mult;
    if (b > 1e18)
        return -ERANGE;
    *bytes = (uint64_t)llround(b);
    return 0;
}

char *units_fmt_duration(uint64_t ms, char *out, size_t len)
{
    uint64_t s = ms / 1000;
    if (ms < 1000)
        snprintf(out, len, "%llums", (unsigned long long)ms);
    else if (s < 60)
        snprintf(out, len, "%llus", (unsigned long long)s);
    else if (s < 3600)
        snprintf(out, len, "%llum%llus", (unsigned long long)(s / 60),
                 (unsigned long long)(s % 60));
    else if (s < 86400)
        snprintf(out, len, "%lluh%llum", (unsigned long long)(s / 3600),
                 (unsigned long long)(s % 3600 / 60));
    else
        snprintf(out, len, "%llud%lluh", (unsigned long long)(s / 86400),
                 (unsigned long long)(s % 86400 / 3600));
    return out;
}

char *units_fmt_size(uint64_t bytes, char *out, size_t len)
{
    static const char *const names[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = (double)bytes;
    int i = 0;
    while (v >= 1024 && i < 4) {
        v /= 1024;
        i++;
    }
    if (i == 0)
        snprintf(out, len, "%lluB", (unsigned long long)bytes);
    else
        snprintf(out, len, "%.1f%s", v, names[i]);
    return out;
}

size_t units_fmt_u64(uint64_t n, char out[UNITS_U64_LEN])
{
    char tmp[UNITS_U64_LEN];
    size_t k = sizeof tmp;
    tmp[--k] = '\0';
    do {
        tmp[--k] = (char)('0' + n % 10);
        n /= 10;
    } while (n);
    memcpy(out, tmp + k, sizeof tmp - k);
    return sizeof tmp - k - 1;
}
