#ifndef YARD_BASE_UNITS_H
#define YARD_BASE_UNITS_H

#include <stddef.h>
#include <stdint.h>

/*
 * Durations: an integer with a unit, "500ms", "300s", "10m", "2h", "1d", or
 * compounds "1h30m". A bare integer is seconds. Returns 0, or -EINVAL for an
 * unparseable string, -ERANGE past 10 years.
 */
int units_parse_duration(const char *s, uint64_t *ms);
/*
 * Sizes: "20GiB", "512MiB", "1.5GiB", "10GB" (powers of 1000), "4096" (bytes),
 * units B KB MB GB TB KiB MiB GiB TiB. Returns 0, -EINVAL or -ERANGE.
 */
int units_parse_size(const char *s, uint64_t *bytes);
/* Writes "1h2m3s"-style text into out; returns out. */
char *units_fmt_duration(uint64_t ms, char *out, size_t len);
/* Writes "20.0GiB"-style text into out; returns out. */
char *units_fmt_size(uint64_t bytes, char *out, size_t len);
/* Room for any uint64_t in decimal and its NUL. */
#define UNITS_U64_LEN 21
/* n in decimal into out, NUL-terminated; returns the length. For the request path: no printf. */
size_t units_fmt_u64(uint64_t n, char out[UNITS_U64_LEN]);

#endif
