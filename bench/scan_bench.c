/*
 * Times router_scan_model on request bodies of 1 KiB to 8 MiB where "model"
 * is the last member, after the bulk of the body (budget, docs/bench.md: a 1 MiB
 * body routed in under 500 us, any shape).
 *
 *   cc -O2 -Isrc bench/scan_bench.c src/router/scan.c -o build/scan_bench
 *   build/scan_bench
 *
 * Shapes: "chat" is a messages array of objects whose content strings carry
 * escapes (\n \" \\ \u00e9); "strings" is an array of short strings;
 * "numbers" is an array of floats, as an embeddings input; "brackets" is an
 * array of small containers, the worst case for bracket counting; "prompt"
 * is one long top-level string with escapes. Prints the
 * median, the best and the worst time per call over the rounds.
 *
 *   build/scan_bench [ROUNDS [MIB]]
 *
 * ROUNDS (default 31) timed rounds per shape and size, each scanning about
 * MIB MiB (default 64) in repeated calls. bench/run builds it into
 * build/bench/ and uses a smaller MIB.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "router/scan.h"

struct body {
    char *data;
    size_t len;
    size_t cap;
};

static void body_add(struct body *b, const char *s, size_t n)
{
    if (b->len + n > b->cap) {
        while (b->len + n > b->cap)
            b->cap = b->cap ? b->cap * 2 : 4096;
        b->data = realloc(b->data, b->cap);
        if (!b->data) {
            perror("realloc");
            exit(1);
        }
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
}

static void body_adds(struct body *b, const char *s)
{
    body_add(b, s, strlen(s));
}

static const char *const tail = "],\"temperature\":0.7,\"stream\":true,\"model\":\"qwen-7b\"}";

static void make_chat(struct body *b, size_t target)
{
    static const char *const content =
        "Here is some code:\\n```c\\nprintf(\\\"%d\\\\n\\\", x);\\n```\\n"
        "and a path C:\\\\Users\\\\caf\\u00e9 with {braces} and [brackets], "
        "a quote \\\"like this\\\" and plain prose that goes on for a while so the "
        "strings are of a realistic length for a chat history turn. ";
    int i = 0;

    body_adds(b, "{\"messages\":[");
    while (b->len + strlen(tail) < target) {
        if (i++)
            body_adds(b, ",");
        body_adds(b, "{\"role\":\"user\",\"content\":\"");
        body_adds(b, content);
        body_adds(b, content);
        body_adds(b, "\"}");
    }
    body_adds(b, tail);
}

static void make_strings(struct body *b, size_t target)
{
    int i = 0;

    body_adds(b, "{\"messages\":[");
    while (b->len + strlen(tail) < target) {
        if (i++)
            body_adds(b, ", ");
        body_adds(b, "\"tok\\\"en\\\\\"");
    }
    body_adds(b, tail);
}

static void make_numbers(struct body *b, size_t target)
{
    int i = 0;

    body_adds(b, "{\"messages\":[");
    while (b->len + strlen(tail) < target) {
        if (i++)
            body_adds(b, ",");
        body_adds(b, "-0.0123456789");
    }
    body_adds(b, tail);
}

static void make_brackets(struct body *b, size_t target)
{
    int i = 0;

    body_adds(b, "{\"messages\":[");
    while (b->len + strlen(tail) < target) {
        if (i++)
            body_adds(b, ",");
        body_adds(b, "[{}]");
    }
    body_adds(b, tail);
}

/* One long top-level string, as a completions "prompt". */
static void make_prompt(struct body *b, size_t target)
{
    static const char *const end = "\",\"max_tokens\":16,\"model\":\"qwen-7b\"}";

    body_adds(b, "{\"prompt\":\"");
    while (b->len + strlen(end) + 16 < target)
        body_adds(b, "line \\n with a \\\"quote\\\" ");
    body_adds(b, end);
}

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int rounds = 31;
static size_t round_bytes = 64u << 20;

static void run(const char *shape, void (*make)(struct body *, size_t), size_t size)
{
    struct body b = {0};
    char model[256];
    double *t = malloc(sizeof(double) * (size_t)rounds);

    make(&b, size);
    /* An exact-size copy: the scan must not rely on anything past len. */
    char *data = malloc(b.len);
    if (!data || !t) {
        perror("malloc");
        exit(1);
    }
    memcpy(data, b.data, b.len);

    int rc = router_scan_model(data, b.len, model, sizeof(model));
    if (rc != 7 || strcmp(model, "qwen-7b") != 0) {
        fprintf(stderr, "%s %zu: scan returned %d\n", shape, size, rc);
        exit(1);
    }

    size_t iters = round_bytes / b.len + 1;
    for (int r = 0; r < rounds; r++) {
        double t0 = now_ns();
        for (size_t i = 0; i < iters; i++)
            rc |= router_scan_model(data, b.len, model, sizeof(model));
        t[r] = (now_ns() - t0) / (double)iters;
    }
    qsort(t, (size_t)rounds, sizeof(t[0]), cmp_double);
    printf("%-8s %9zu bytes  median %10.1f us  best %10.1f us  worst %10.1f us  %6.2f GB/s\n",
           shape, b.len, t[rounds / 2] / 1e3, t[0] / 1e3, t[rounds - 1] / 1e3,
           (double)b.len / t[rounds / 2]);
    free(t);
    free(data);
    free(b.data);
}

static long arg_long(const char *s, long lo, long hi)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "usage: scan_bench [ROUNDS [MIB]]\n");
        exit(2);
    }
    return v;
}

int main(int argc, char **argv)
{
    static const size_t sizes[] = {1u << 10, 64u << 10, 1u << 20, 8u << 20};

    if (argc > 1)
        rounds = (int)arg_long(argv[1], 1, 100000);
    if (argc > 2)
        round_bytes = (size_t)arg_long(argv[2], 1, 1 << 20) << 20;

    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
        run("chat", make_chat, sizes[i]);
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
        run("strings", make_strings, sizes[i]);
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
        run("numbers", make_numbers, sizes[i]);
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
        run("brackets", make_brackets, sizes[i]);
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
        run("prompt", make_prompt, sizes[i]);
    return 0;
}
