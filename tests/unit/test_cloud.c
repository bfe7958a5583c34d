/*
 * The cloud module: the retry schedule, the offer search as the config and a
 * need make it (floors per strictness, the need, the price, the user's
 * filters merged with the floor, the bad machines), each offer checked again
 * with its reason, the ranking and its reasons, the one-line errors from the
 * API's answers, and the HTTP client on a real loop against a server in this
 * process (retries of 429 and 5xx, a refused connection, the answer's cap,
 * cancel, and close with a request in flight).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cmocka.h>
#include <uv.h>

#include "cloud/http.h"
#include "cloud/vast.h"
#include "config/config.h"
#include "testutil.h"

/* ---- the retry schedule --------------------------------------------- */

static void test_backoff(void **state)
{
    struct cloud_backoff b = CLOUD_BACKOFF_DEFAULT;
    assert_int_equal(b.max_attempts, 6);
    /* Each step doubles up to the cap; the wait is within [step/2, step]. */
    const uint64_t steps[] = {250, 500, 1000, 2000, 4000, 4000, 4000};
    for (int k = 1; k <= 7; k++) {
        uint64_t step = steps[k - 1];
        assert_int_equal(cloud_backoff_ms(&b, k, 0), step / 2);
        assert_int_equal(cloud_backoff_ms(&b, k, (uint32_t)(step - step / 2)), step);
        for (uint32_t rnd = 0; rnd < 5000; rnd += 37) {
            uint64_t ms = cloud_backoff_ms(&b, k, rnd * 2654435761u);
            assert_true(ms >= step / 2 && ms <= step);
        }
    }
    assert_int_equal(cloud_backoff_ms(&b, 0, 12345), 0);
    /* Five waits between six attempts: 250 + 500 + 1000 + 2000 + 4000. */
    assert_int_equal(cloud_backoff_max_total_ms(&b), 7750);
    struct cloud_backoff once = {1, 250, 4000};
    assert_int_equal(cloud_backoff_max_total_ms(&once), 0);
    /* A long schedule does not overflow: the step stops doubling at the cap. */
    struct cloud_backoff many = {1000, 100, 1000};
    assert_int_equal(cloud_backoff_ms(&many, 999, 0), 500);
    assert_int_equal(cloud_backoff_max_total_ms(&many), 100 + 200 + 400 + 800 + 995ull * 1000);
}

/* ---- the search ----------------------------------------------------- */

static struct config_cloud cloud(enum config_strictness s)
{
    return (struct config_cloud){
        .name = "vast",
        .provider = "vast",
        .api_key = "k",
        .url = "http://127.0.0.1:1",
        .strictness = s,
        .max_price = 1.5,
        .disk = 60ull << 30,
    };
}

static char *dump(const json_t *v)
{
    char *s = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS);
    assert_non_null(s);
    return s;
}

static void expect_body(const struct cloud_query *q, const char *want)
{
    json_error_t e;
    json_t *w = json_loads(want, 0, &e);
    if (!w)
        fail_msg("bad expected JSON: %s", e.text);
    char *got = dump(q->body), *exp = dump(w);
    if (strcmp(got, exp) != 0)
        print_message("got:  %s\nwant: %s\n", got, exp);
    assert_string_equal(got, exp);
    free(got);
    free(exp);
    json_decref(w);
}

static void test_query_floors(void **state)
{
    struct config_cloud c = cloud(CONFIG_STRICTNESS_BALANCED);
    struct cloud_need need = {.gpus = 1};
    struct cloud_query q;
    char *err = NULL;
    assert_int_equal(cloud_vast_query(&c, &need, NULL, 0, &q, &err), 0);
    assert_null(err);
    expect_body(&q, "{\"rentable\":{\"eq\":true},\"rented\":{\"eq\":false},"
                    "\"external\":{\"eq\":false},\"verified\":{\"eq\":true},"
                    "\"reliability2\":{\"gte\":0.9},\"inet_down\":{\"gt\":128},"
                    "\"direct_port_count\":{\"gte\":1},\"num_gpus\":{\"eq\":1},"
                    "\"dph_total\":{\"lte\":1.5},"
                    "\"order\":[[\"dph_total\",\"asc\"],[\"score\",\"desc\"]],"
                    "\"type\":\"on-demand\",\"limit\":64,\"allocated_storage\":65}");
    /* Each condition keeps where it came from, for the reasons. */
    assert_string_equal(q.conds[0].origin, "always");
    assert_string_equal(q.conds[3].field, "verified");
    assert_string_equal(q.conds[3].origin, "strictness balanced");
    cloud_query_release(&q);

    c = cloud(CONFIG_STRICTNESS_STRICT);
    need = (struct cloud_need){.gpus = 2, .vram = 24ull << 30};
    int64_t bad[] = {10001, 10007};
    assert_int_equal(cloud_vast_query(&c, &need, bad, 2, &q, &err), 0);
    expect_body(&q, "{\"rentable\":{\"eq\":true},\"rented\":{\"eq\":false},"
                    "\"external\":{\"eq\":false},\"verified\":{\"eq\":true},"
                    "\"datacenter\":{\"eq\":true},\"reliability2\":{\"gte\":0.98},"
                    "\"inet_down\":{\"gte\":500},\"direct_port_count\":{\"gte\":1},"
                    "\"num_gpus\":{\"eq\":2},\"gpu_ram\":{\"gte\":24576},"
                    "\"dph_total\":{\"lte\":1.5},\"machine_id\":{\"notin\":[10001,10007]},"
                    "\"order\":[[\"dph_total\",\"asc\"],[\"score\",\"desc\"]],"
                    "\"type\":\"on-demand\",\"limit\":64,\"allocated_storage\":65}");
    cloud_query_release(&q);

    c = cloud(CONFIG_STRICTNESS_AGGRESSIVE);
    c.disk = 10ull * 1000 * 1000 * 1000;
    need = (struct cloud_need){.gpus = 1, .vram = 1}; /* a byte still asks for a whole MiB */
    assert_int_equal(cloud_vast_query(&c, &need, NULL, 0, &q, &err), 0);
    expect_body(&q, "{\"rentable\":{\"eq\":true},\"rented\":{\"eq\":false},"
                    "\"external\":{\"eq\":false},\"reliability2\":{\"gte\":0.8},"
                    "\"num_gpus\":{\"eq\":1},\"gpu_ram\":{\"gte\":1},"
                    "\"dph_total\":{\"lte\":1.5},"
                    "\"order\":[[\"dph_total\",\"asc\"],[\"score\",\"desc\"]],"
                    "\"type\":\"on-demand\",\"limit\":64,\"allocated_storage\":10}");
    cloud_query_release(&q);
}

static void test_query_filters(void **state)
{
    struct config_value rel_hi = {CONFIG_VALUE_NUMBER, "0.99", 0.99, 0};
    struct config_value rel_lo = {CONFIG_VALUE_NUMBER, "0.5", 0.5, 0};
    struct config_value name = {CONFIG_VALUE_STRING, "RTX 4090", 0, 0};
    struct config_value geo[] = {{CONFIG_VALUE_STRING, "US", 0, 0},
                                 {CONFIG_VALUE_STRING, "CA", 0, 0}};
    struct config_value t = {CONFIG_VALUE_BOOL, "true", 0, 1};
    struct config_value f = {CONFIG_VALUE_BOOL, "false", 0, 0};
    struct config_value inet = {CONFIG_VALUE_NUMBER, "1000", 1000, 0};
    struct config_cloud_filter filters[] = {
        {"gpu_name", "eq", &name, 1, 0},        {"geolocation", "in", geo, 2, 1},
        {"reliability2", "gte", &rel_hi, 1, 0}, {"verified", "eq", &t, 1, 0},
        {"inet_down", "gte", &inet, 1, 0},
    };
    struct config_cloud c = cloud(CONFIG_STRICTNESS_BALANCED);
    c.filters = filters;
    c.n_filters = 5;
    struct cloud_need need = {.gpus = 1};
    struct cloud_query q;
    char *err = NULL;
    assert_int_equal(cloud_vast_query(&c, &need, NULL, 0, &q, &err), 0);
    /* The stricter reliability wins (and says so); the same verified is sent once; a
     * gte beside the floor's gt on inet_down adds to it. */
    expect_body(&q, "{\"rentable\":{\"eq\":true},\"rented\":{\"eq\":false},"
                    "\"external\":{\"eq\":false},\"verified\":{\"eq\":true},"
                    "\"reliability2\":{\"gte\":0.99},\"inet_down\":{\"gt\":128,\"gte\":1000},"
                    "\"direct_port_count\":{\"gte\":1},\"num_gpus\":{\"eq\":1},"
                    "\"dph_total\":{\"lte\":1.5},\"gpu_name\":{\"eq\":\"RTX 4090\"},"
                    "\"geolocation\":{\"in\":[\"US\",\"CA\"]},"
                    "\"order\":[[\"dph_total\",\"asc\"],[\"score\",\"desc\"]],"
                    "\"type\":\"on-demand\",\"limit\":64,\"allocated_storage\":65}");
    for (size_t i = 0; i < q.n; i++)
        if (!strcmp(q.conds[i].field, "reliability2"))
            assert_string_equal(q.conds[i].origin, "filters");
    cloud_query_release(&q);

    /* A looser bound than the floor is not a way around it. */
    filters[2].values = &rel_lo;
    assert_int_equal(cloud_vast_query(&c, &need, NULL, 0, &q, &err), 0);
    for (size_t i = 0; i < q.n; i++)
        if (!strcmp(q.conds[i].field, "reliability2")) {
            assert_true(json_real_value(q.conds[i].value) == 0.9);
            assert_string_equal(q.conds[i].origin, "strictness balanced");
        }
    cloud_query_release(&q);

    /* A filter that contradicts the floor is refused with what to do. */
    filters[3].values = &f;
    assert_int_equal(cloud_vast_query(&c, &need, NULL, 0, &q, &err), -EINVAL);
    assert_string_equal(err, "clouds.vast.filters.verified: verified = false (filters) "
                             "contradicts verified = true (strictness balanced); remove one, or "
                             "choose another strictness");
    free(err);
    cloud_query_release(&q);
    /* Under aggressive there is no such floor. */
    c.strictness = CONFIG_STRICTNESS_AGGRESSIVE;
    assert_int_equal(cloud_vast_query(&c, &need, NULL, 0, &q, &err), 0);
    cloud_query_release(&q);
}

/* ---- checking and ranking ------------------------------------------- */

static json_t *offer(const char *fmt, ...)
{
    /* A passing RTX 4090 offer, with fields of fmt (a JSON object) over it. */
    json_t *o = json_pack("{s:i, s:i, s:i, s:s, s:i, s:i, s:f, s:f, s:f, s:b, s:b, s:i, s:s, "
                          "s:f, s:b, s:b, s:b}",
                          "id", 4000001, "machine_id", 10001, "host_id", 201, "gpu_name",
                          "RTX 4090", "num_gpus", 1, "gpu_ram", 24564, "dph_total", 0.4,
                          "reliability2", 0.995, "inet_down", 900.0, "verified", 1, "datacenter", 0,
                          "direct_port_count", 20, "geolocation", "Oregon, US", "score", 100.0,
                          "rentable", 1, "rented", 0, "external", 0);
    va_list ap;
    va_start(ap, fmt);
    char over[1024];
    vsnprintf(over, sizeof over, fmt, ap);
    va_end(ap);
    json_error_t e;
    json_t *x = json_loads(over, 0, &e);
    if (!x)
        fail_msg("bad offer JSON '%s': %s", over, e.text);
    json_object_update(o, x);
    json_decref(x);
    return o;
}

static void expect_offer(const struct cloud_query *q, json_t *o, const char *want)
{
    char *why = cloud_vast_check(q, o);
    if (!want) {
        if (why)
            fail_msg("unexpected: %s", why);
    } else {
        assert_non_null(why);
        assert_string_equal(why, want);
    }
    free(why);
    json_decref(o);
}

static void test_check(void **state)
{
    struct config_value geo[] = {{CONFIG_VALUE_STRING, "US", 0, 0},
                                 {CONFIG_VALUE_STRING, "CA", 0, 0}};
    struct config_value cap = {CONFIG_VALUE_STRING, "800", 0, 0};
    struct config_value ip = {CONFIG_VALUE_BOOL, "true", 0, 1};
    struct config_cloud_filter filters[] = {{"geolocation", "in", geo, 2, 1},
                                            {"compute_cap", "gte", &cap, 1, 0},
                                            {"static_ip", "eq", &ip, 1, 0}};
    struct config_cloud c = cloud(CONFIG_STRICTNESS_BALANCED);
    c.filters = filters;
    c.n_filters = 3;
    struct cloud_need need = {.gpus = 1, .vram = 20ull << 30};
    int64_t bad[] = {10009};
    struct cloud_query q;
    char *err = NULL;
    assert_int_equal(cloud_vast_query(&c, &need, bad, 1, &q, &err), 0);

    expect_offer(&q, offer("{\"compute_cap\": 890, \"static_ip\": true}"), NULL);
    /* "City, CC" matches its country; numbers sent as text compare as numbers. */
    expect_offer(&q, offer("{\"compute_cap\": 800, \"static_ip\": true, \"geolocation\": \"CA\"}"),
                 NULL);
    expect_offer(&q, offer("{\"compute_cap\": 890, \"static_ip\": true, \"reliability2\": 0.85}"),
                 "reliability2 is 0.85, under 0.9 (strictness balanced)");
    expect_offer(&q, offer("{\"compute_cap\": 890, \"static_ip\": true, \"verified\": false}"),
                 "verified is false, not true (strictness balanced)");
    expect_offer(&q, offer("{\"compute_cap\": 890, \"static_ip\": true, \"inet_down\": 128}"),
                 "inet_down is 128, not above 128 (strictness balanced)");
    expect_offer(&q, offer("{\"compute_cap\": 890, \"static_ip\": true, \"dph_total\": 2.25}"),
                 "dph_total is 2.25, above 1.5 (max_price)");
    expect_offer(&q, offer("{\"compute_cap\": 890, \"static_ip\": true, \"gpu_ram\": 16384}"),
                 "gpu_ram is 16384, under 20480 (--vram)");
    expect_offer(&q, offer("{\"compute_cap\": 890, \"static_ip\": true, \"num_gpus\": 2}"),
                 "num_gpus is 2, not 1 (--gpus)");
    expect_offer(&q,
                 offer("{\"compute_cap\": 890, \"static_ip\": true, \"geolocation\": \"Berlin, "
                       "DE\"}"),
                 "geolocation is 'Berlin, DE', not one of ['US', 'CA'] (filters)");
    expect_offer(&q, offer("{\"compute_cap\": 750, \"static_ip\": true}"),
                 "compute_cap is 750, under '800' (filters)");
    expect_offer(&q, offer("{\"compute_cap\": 890}"),
                 "the offer has no 'static_ip' (filters asks = true)");
    expect_offer(&q, offer("{\"compute_cap\": 890, \"static_ip\": true, \"machine_id\": 10009}"),
                 "machine_id is 10009, which bad-host list excludes");
    expect_offer(&q, offer("{\"compute_cap\": 890, \"static_ip\": true, \"rented\": true}"),
                 "rented is true, not false (always)");
    /* A text where a number is due fails the bound, it does not pass it. */
    expect_offer(&q,
                 offer("{\"compute_cap\": 890, \"static_ip\": true, \"reliability2\": "
                       "\"high\"}"),
                 "reliability2 is 'high', under 0.9 (strictness balanced)");
    cloud_query_release(&q);
}

static json_t *answer(json_t *first, ...)
{
    json_t *a = json_array();
    va_list ap;
    va_start(ap, first);
    for (json_t *o = first; o; o = va_arg(ap, json_t *))
        json_array_append_new(a, o);
    va_end(ap);
    return a;
}

static const char *str_at(const json_t *list, size_t i, const char *key)
{
    const char *s = json_string_value(json_object_get(json_array_get(list, i), key));
    assert_non_null(s);
    return s;
}

static json_int_t int_at(const json_t *list, size_t i, const char *key)
{
    const json_t *v = json_object_get(json_array_get(list, i), key);
    assert_true(json_is_integer(v));
    return json_integer_value(v);
}

static void test_rank(void **state)
{
    struct config_cloud c = cloud(CONFIG_STRICTNESS_BALANCED);
    struct cloud_need need = {.gpus = 1};
    struct cloud_query q;
    char *err = NULL;
    assert_int_equal(cloud_vast_query(&c, &need, NULL, 0, &q, &err), 0);

    json_t *offers = answer(offer("{\"id\": 11, \"dph_total\": 0.5, \"score\": 100}"),
                            offer("{\"id\": 12, \"dph_total\": 0.4, \"score\": 90}"),
                            offer("{\"id\": 13, \"dph_total\": 0.4, \"score\": 120}"),
                            offer("{\"id\": 14, \"dph_total\": 0.5, \"score\": 100}"),
                            offer("{\"id\": 15, \"dph_total\": 0.3, \"reliability2\": 0.5}"),
                            offer("{\"id\": 12, \"dph_total\": 0.1}"), json_string("not an offer"),
                            offer("{\"id\": 16, \"dph_total\": \"cheap\"}"), NULL);
    json_t *r = cloud_vast_rank(&q, offers, NULL, 0);
    json_decref(offers);
    const json_t *ranked = json_object_get(r, "offers"), *ex = json_object_get(r, "excluded");
    assert_int_equal(json_array_size(ranked), 4);
    /* Price, then the API's score, then the offer id. */
    const json_int_t order[] = {13, 12, 11, 14};
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(int_at(ranked, i, "rank"), i + 1);
        assert_int_equal(int_at(ranked, i, "id"), order[i]);
    }
    assert_string_equal(str_at(ranked, 0, "reason"),
                        "the cheapest ($0.400/h), and of that price the highest API score (120)");
    assert_string_equal(str_at(ranked, 1, "reason"),
                        "$0.400/h as the one above, and a lower API score (90 against 120)");
    assert_string_equal(str_at(ranked, 2, "reason"),
                        "$0.500/h, more than the one above ($0.400/h)");
    assert_string_equal(str_at(ranked, 3, "reason"),
                        "price and API score as the one above; a higher offer id");
    /* The fields shown, named yard's way. */
    const json_t *e0 = json_array_get(ranked, 0);
    assert_int_equal(json_integer_value(json_object_get(e0, "machine_id")), 10001);
    assert_int_equal(json_integer_value(json_object_get(e0, "gpu_ram_mib")), 24564);
    assert_true(json_real_value(json_object_get(e0, "reliability")) == 0.995);
    assert_string_equal(json_string_value(json_object_get(e0, "geolocation")), "Oregon, US");
    /* Exclusions in the API's order, each with its reason. */
    assert_int_equal(json_array_size(ex), 4);
    assert_int_equal(int_at(ex, 0, "id"), 15);
    assert_string_equal(str_at(ex, 0, "reason"),
                        "reliability2 is 0.5, under 0.9 (strictness balanced)");
    assert_int_equal(int_at(ex, 1, "id"), 12);
    assert_string_equal(str_at(ex, 1, "reason"), "the API listed this offer twice");
    assert_true(json_is_null(json_object_get(json_array_get(ex, 2), "id")));
    assert_string_equal(str_at(ex, 2, "reason"), "the API listed something that is not an offer");
    assert_string_equal(str_at(ex, 3, "reason"), "the offer has no price ('dph_total')");
    assert_null(json_object_get(json_array_get(ex, 0), "rank"));
    json_decref(r);

    /* One offer; none; a tie on everything but the id; no score at all. */
    offers = answer(offer("{\"id\": 21, \"dph_total\": 0.25}"), NULL);
    r = cloud_vast_rank(&q, offers, NULL, 0);
    assert_string_equal(str_at(json_object_get(r, "offers"), 0, "reason"),
                        "the one offer that passes: $0.250/h");
    json_decref(r);
    json_decref(offers);
    offers = json_array();
    r = cloud_vast_rank(&q, offers, NULL, 0);
    assert_int_equal(json_array_size(json_object_get(r, "offers")), 0);
    assert_int_equal(json_array_size(json_object_get(r, "excluded")), 0);
    json_decref(r);
    json_decref(offers);
    offers = answer(offer("{\"id\": 32}"), offer("{\"id\": 31}"), NULL);
    r = cloud_vast_rank(&q, offers, NULL, 0);
    assert_int_equal(int_at(json_object_get(r, "offers"), 0, "id"), 31);
    assert_string_equal(str_at(json_object_get(r, "offers"), 0, "reason"),
                        "the cheapest ($0.400/h) with the highest API score (100); the lowest "
                        "offer id of those alike");
    json_decref(r);
    json_decref(offers);
    json_t *a = offer("{\"id\": 41}"), *b = offer("{\"id\": 42}");
    json_object_del(a, "score");
    offers = answer(a, b, NULL);
    r = cloud_vast_rank(&q, offers, NULL, 0);
    assert_int_equal(int_at(json_object_get(r, "offers"), 0, "id"), 42);
    assert_string_equal(str_at(json_object_get(r, "offers"), 1, "reason"),
                        "$0.400/h as the one above, and a lower API score (none against 100)");
    json_decref(r);
    json_decref(offers);
    cloud_query_release(&q);
}

/* 2026-12-06 10:00 UTC */
#define AT_10 1796551200000LL

static void test_rank_history(void **state)
{
    (void)state;
    struct config_cloud c = cloud(CONFIG_STRICTNESS_BALANCED);
    struct cloud_need need = {.gpus = 1};
    struct cloud_query q;
    char *err = NULL;
    const int64_t bad[] = {5008};
    assert_int_equal(cloud_vast_query(&c, &need, bad, 1, &q, &err), 0);
    const struct cloud_history hist[] = {
        {.machine_id = 5001,
         .host_id = 301,
         .failed = 1,
         .last_failure_ms = AT_10,
         .last_failure = "ssh never answered"},
        {.machine_id = 5002, .host_id = 302, .ready = 3, .ready_ms_total = 123000},
        {.machine_id = 5003, .host_id = 302, .ready = 3, .ready_ms_total = 150000},
        {.machine_id = 5006,
         .host_id = 304,
         .failed = 2,
         .ready = 1,
         .ready_ms_total = 60000,
         .last_failure_ms = AT_10 + 60000,
         .last_failure = "nvidia-smi shows 0 GPUs"},
        {.machine_id = 5007, .host_id = 305, .ready = 1, .ready_ms_total = 29600},
        {.machine_id = 5008, .host_id = 306, .failed = 1, .last_failure = "exited"},
        {.machine_id = 9999, .host_id = 301, .ready = 7, .ready_ms_total = 7000},
    };
    json_t *offers = answer(
        offer("{\"id\": 51, \"machine_id\": 5001, \"host_id\": 301, \"dph_total\": 0.3}"),
        offer("{\"id\": 52, \"machine_id\": 5002, \"host_id\": 302, \"dph_total\": 0.5}"),
        offer("{\"id\": 53, \"machine_id\": 5003, \"host_id\": 302, \"dph_total\": 0.4}"),
        offer("{\"id\": 54, \"machine_id\": 5004, \"host_id\": 301, \"dph_total\": 0.2}"),
        offer("{\"id\": 55, \"machine_id\": 5005, \"host_id\": 303, \"dph_total\": 0.25}"),
        offer("{\"id\": 56, \"machine_id\": 5006, \"host_id\": 304, \"dph_total\": 0.1}"),
        offer("{\"id\": 57, \"machine_id\": 5007, \"host_id\": 305, \"dph_total\": 0.35}"),
        offer("{\"id\": 58, \"machine_id\": 5008, \"host_id\": 306, \"dph_total\": 0.1}"), NULL);
    json_t *r = cloud_vast_rank(&q, offers, hist, sizeof hist / sizeof hist[0]);
    json_decref(offers);
    const json_t *ranked = json_object_get(r, "offers"), *ex = json_object_get(r, "excluded");
    /*
     * No failure before a failure, whatever the price; then no failure of
     * the host's other machines; then more times ready, then faster.
     */
    const json_int_t order[] = {52, 53, 57, 55, 54, 51, 56};
    assert_int_equal(json_array_size(ranked), 7);
    for (size_t i = 0; i < 7; i++)
        assert_int_equal(int_at(ranked, i, "id"), order[i]);
    const char *const why[] = {
        "machine 5002 was ready 3 times (mean 41 s to ready), no failures; the next took 50 s",
        "machine 5003 was ready 3 times (mean 50 s to ready), no failures; slower than the one "
        "above (41 s)",
        "machine 5007 was ready once (mean 30 s to ready), no failures; the one above was ready 3 "
        "times",
        "machine 5005 has no rental on record; the one above was ready once",
        "its host 301 failed once on other machines, the last on machine 5001 (ssh never "
        "answered) at 2026-12-06 10:00 UTC",
        "machine 5001 failed once (ssh never answered) at 2026-12-06 10:00 UTC",
        "machine 5006 failed twice, the last (nvidia-smi shows 0 GPUs) at 2026-12-06 10:01 UTC, "
        "and was ready once (mean 60 s to ready); more than the one above (once)",
    };
    for (size_t i = 0; i < 7; i++)
        assert_string_equal(str_at(ranked, i, "reason"), why[i]);

    /* Each entry shows its machine's history; the excluded ones too. */
    const json_t *h = json_object_get(json_array_get(ranked, 0), "history");
    assert_int_equal(json_integer_value(json_object_get(h, "ready")), 3);
    assert_int_equal(json_integer_value(json_object_get(h, "failed")), 0);
    assert_int_equal(json_integer_value(json_object_get(h, "mean_ready_s")), 41);
    assert_true(json_is_null(json_object_get(h, "last_failure")));
    h = json_object_get(json_array_get(ranked, 3), "history");
    assert_int_equal(json_integer_value(json_object_get(h, "ready")), 0);
    assert_true(json_is_null(json_object_get(h, "mean_ready_s")));
    h = json_object_get(json_array_get(ranked, 5), "history");
    assert_int_equal(json_integer_value(json_object_get(h, "failed")), 1);
    const json_t *last = json_object_get(h, "last_failure");
    assert_string_equal(json_string_value(json_object_get(last, "reason")), "ssh never answered");
    assert_int_equal(json_integer_value(json_object_get(last, "at_ms")), AT_10);
    assert_int_equal(json_array_size(ex), 1);
    assert_string_equal(str_at(ex, 0, "reason"),
                        "machine_id is 5008, which bad-host list excludes");
    h = json_object_get(json_array_get(ex, 0), "history");
    assert_int_equal(json_integer_value(json_object_get(h, "failed")), 1);
    json_decref(r);

    /* The first offer's reason, for each history key it wins by. */
    offers = answer(offer("{\"id\": 61, \"machine_id\": 5005, \"dph_total\": 0.9}"),
                    offer("{\"id\": 62, \"machine_id\": 5001, \"dph_total\": 0.1}"), NULL);
    r = cloud_vast_rank(&q, offers, hist, sizeof hist / sizeof hist[0]);
    assert_int_equal(int_at(json_object_get(r, "offers"), 0, "id"), 61);
    assert_string_equal(str_at(json_object_get(r, "offers"), 0, "reason"),
                        "machine 5005 has no rental on record; the next failed once");
    json_decref(r);
    json_decref(offers);
    offers = answer(
        offer("{\"id\": 71, \"machine_id\": 5004, \"host_id\": 301, \"dph_total\": 0.1}"),
        offer("{\"id\": 72, \"machine_id\": 5005, \"host_id\": 303, \"dph_total\": 0.9}"), NULL);
    r = cloud_vast_rank(&q, offers, hist, sizeof hist / sizeof hist[0]);
    assert_int_equal(int_at(json_object_get(r, "offers"), 0, "id"), 72);
    assert_string_equal(str_at(json_object_get(r, "offers"), 0, "reason"),
                        "machine 5005 has no rental on record; no failures of its host 303's "
                        "other machines");
    json_decref(r);
    json_decref(offers);
    offers = answer(offer("{\"id\": 81, \"machine_id\": 5005, \"dph_total\": 0.1}"),
                    offer("{\"id\": 82, \"machine_id\": 5007, \"dph_total\": 0.9}"), NULL);
    r = cloud_vast_rank(&q, offers, hist, sizeof hist / sizeof hist[0]);
    assert_int_equal(int_at(json_object_get(r, "offers"), 0, "id"), 82);
    assert_string_equal(str_at(json_object_get(r, "offers"), 0, "reason"),
                        "machine 5007 was ready once (mean 30 s to ready), no failures");
    json_decref(r);
    json_decref(offers);
    /* Alike in history, the price decides as before. */
    offers = answer(offer("{\"id\": 91, \"machine_id\": 5002, \"dph_total\": 0.5}"),
                    offer("{\"id\": 92, \"machine_id\": 5002, \"dph_total\": 0.4}"), NULL);
    r = cloud_vast_rank(&q, offers, hist, sizeof hist / sizeof hist[0]);
    assert_int_equal(int_at(json_object_get(r, "offers"), 0, "id"), 92);
    assert_string_equal(str_at(json_object_get(r, "offers"), 0, "reason"),
                        "the cheapest: $0.400/h");
    json_decref(r);
    json_decref(offers);
    cloud_query_release(&q);
}

/* ---- one-line errors ------------------------------------------------ */

static char *err_for(int rc, long status, const char *ctype, const char *body, int attempts)
{
    struct cloud_http_result r = {.rc = rc,
                                  .status = status,
                                  .content_type = ctype,
                                  .body = body ? body : "",
                                  .len = body ? strlen(body) : 0,
                                  .transport = rc < 0 ? "Failed to connect to 127.0.0.1 port 9: "
                                                        "Connection refused"
                                                      : NULL,
                                  .attempts = attempts,
                                  .elapsed_ms = 7250};
    return cloud_vast_error(&r, "the search", "vast", "http://127.0.0.1:9");
}

static void expect_err(char *got, const char *want)
{
    assert_string_equal(got, want);
    free(got);
}

static void test_errors(void **state)
{
    expect_err(err_for(0, 401, "application/json",
                       "{\"success\": false, \"error\": \"auth_error\", \"msg\": \"Invalid user "
                       "key\"}",
                       1),
               "the Vast API refused the key (401 auth_error: Invalid user key); check "
               "clouds.vast.api_key");
    expect_err(err_for(0, 401, "text/plain", "", 1),
               "the Vast API refused the key (401 Unauthorized); check clouds.vast.api_key");
    expect_err(
        err_for(0, 429, "text/plain", "API requests too frequent: endpoint threshold=2.0", 6),
        "the Vast API kept limiting the rate of the search (429: API requests too "
        "frequent: endpoint threshold=2.0) (6 attempts in 7.2 s); wait a minute and try "
        "again");
    expect_err(err_for(0, 502, "text/html",
                       "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>x</body>",
                       6),
               "the Vast API failed the search (502: 502 Bad Gateway) (6 attempts in 7.2 s); try "
               "again later");
    expect_err(err_for(0, 503, NULL, NULL, 6),
               "the Vast API failed the search (503 Service Unavailable) (6 attempts in 7.2 s); "
               "try again later");
    expect_err(err_for(0, 400, "application/json",
                       "{\"success\": false, \"error\": \"invalid_args\", \"msg\": \"unknown "
                       "operator 'above' for 'inet_down'\"}",
                       1),
               "the Vast API refused the search (400 invalid_args: unknown operator 'above' for "
               "'inet_down')");
    /* Only "message", only "error", and a 200 that says it failed. */
    expect_err(err_for(0, 404, "application/json", "{\"message\": \"no such thing\"}", 1),
               "the Vast API refused the search (404: no such thing)");
    expect_err(err_for(0, 400, "application/json", "{\"error\": \"bad_request\"}", 1),
               "the Vast API refused the search (400: bad_request)");
    expect_err(err_for(0, 200, "application/json",
                       "{\"success\": false, \"error\": \"x\", \"msg\": \"m\"}", 1),
               "the Vast API refused the search (200 x: m)");
    /* The API's bytes made one printable line. */
    expect_err(err_for(0, 400, "text/plain", "line one\n\tline\x01two \xff end  ", 1),
               "the Vast API refused the search (400: line one line two \xef\xbf\xbd end)");
    char long_body[1000];
    memset(long_body, 'a', sizeof long_body - 1);
    long_body[sizeof long_body - 1] = '\0';
    char *got = err_for(0, 400, "text/plain", long_body, 1);
    assert_true(strlen(got) < 400);
    assert_non_null(strstr(got, "aaa...)"));
    free(got);
    /* No answer at all. */
    expect_err(err_for(-ECONNREFUSED, 0, NULL, NULL, 6),
               "cannot reach the Vast API at 'http://127.0.0.1:9': Failed to connect to 127.0.0.1 "
               "port 9: Connection refused (6 attempts in 7.2 s); check clouds.vast.url and the "
               "network");
    expect_err(err_for(-ECANCELED, 0, NULL, NULL, 1),
               "the search was cancelled: the daemon is shutting down");
}

/* ---- the client against a server in this process -------------------- */

struct reply {
    int status;
    const char *ctype;
    const char *body;
};

struct srv {
    uv_loop_t *loop;
    uv_tcp_t tcp;
    int port;
    const struct reply *script; /* the last one repeats */
    int n_script;
    int hang; /* read requests, never answer */
    int requests;
    char last[8192];
    int closed;
};

struct sconn {
    uv_tcp_t h;
    struct srv *s;
    char buf[65536];
    size_t len;
    int answered;
};

struct swrite {
    uv_write_t w;
    char *data;
};

static void on_sconn_closed(uv_handle_t *h)
{
    free(h->data);
}

static void on_swritten(uv_write_t *w, int status)
{
    struct swrite *sw = (struct swrite *)w;
    free(sw->data);
    uv_close((uv_handle_t *)w->handle, on_sconn_closed);
    free(sw);
}

static void s_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    struct sconn *c = h->data;
    b->base = c->buf + c->len;
    b->len = sizeof c->buf - c->len - 1;
}

static void s_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
    struct sconn *c = st->data;
    if (n < 0) {
        uv_close((uv_handle_t *)st, on_sconn_closed);
        return;
    }
    c->len += (size_t)n;
    c->buf[c->len] = '\0';
    char *end = strstr(c->buf, "\r\n\r\n");
    if (!end || c->answered)
        return;
    size_t want = 0;
    for (char *p = c->buf; p < end; p = strstr(p, "\r\n") + 2)
        if (!strncasecmp(p, "Content-Length:", 15))
            want = strtoul(p + 15, NULL, 10);
    if (c->len < (size_t)(end + 4 - c->buf) + want)
        return;
    struct srv *s = c->s;
    c->answered = 1;
    snprintf(s->last, sizeof s->last, "%.*s", (int)(sizeof s->last - 1), c->buf);
    s->requests++;
    if (s->hang)
        return;
    const struct reply *r =
        &s->script[s->requests <= s->n_script ? s->requests - 1 : s->n_script - 1];
    struct swrite *sw = calloc(1, sizeof *sw);
    assert_true(asprintf(&sw->data,
                         "HTTP/1.1 %d X\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                         "Connection: close\r\n\r\n%s",
                         r->status, r->ctype, strlen(r->body), r->body) > 0);
    uv_buf_t ub = uv_buf_init(sw->data, (unsigned)strlen(sw->data));
    uv_read_stop(st);
    uv_write(&sw->w, st, &ub, 1, on_swritten);
}

static void s_conn(uv_stream_t *server, int status)
{
    struct srv *s = server->data;
    struct sconn *c = calloc(1, sizeof *c);
    c->s = s;
    uv_tcp_init(s->loop, &c->h);
    c->h.data = c;
    assert_int_equal(uv_accept(server, (uv_stream_t *)&c->h), 0);
    uv_read_start((uv_stream_t *)&c->h, s_alloc, s_read);
}

static void srv_start(struct srv *s, uv_loop_t *loop)
{
    s->loop = loop;
    uv_tcp_init(loop, &s->tcp);
    s->tcp.data = s;
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", 0, &a);
    assert_int_equal(uv_tcp_bind(&s->tcp, (struct sockaddr *)&a, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&s->tcp, 16, s_conn), 0);
    int len = sizeof a;
    uv_tcp_getsockname(&s->tcp, (struct sockaddr *)&a, &len);
    s->port = ntohs(a.sin_port);
}

static void on_srv_closed(uv_handle_t *h)
{
    ((struct srv *)h->data)->closed = 1;
}

/* What a request's callback saw. */
struct outcome {
    int calls;
    int rc;
    long status;
    char body[4096];
    int attempts;
    int retryable;
    char transport[256];
};

static void on_outcome(void *arg, const struct cloud_http_result *r)
{
    struct outcome *o = arg;
    o->calls++;
    o->rc = r->rc;
    o->status = r->status;
    snprintf(o->body, sizeof o->body, "%s", r->body);
    o->attempts = r->attempts;
    o->retryable = r->retryable;
    snprintf(o->transport, sizeof o->transport, "%s", r->transport ? r->transport : "");
}

static const struct cloud_http_opts fast_opts = {
    .method = "POST",
    .bearer = "sekrit",
    .body = "{\"q\":1}",
    .body_len = 7,
    .retry_on = CLOUD_RETRY_ALL,
    .backoff = {4, 1, 2},
};

/* Sends one request to s (port < 0: nothing listens) and runs the loop until it is answered. */
static void roundtrip(uv_loop_t *loop, struct cloud_http *h, struct srv *s, int port,
                      struct cloud_http_opts o, struct outcome *out)
{
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/api/v0/bundles/", port ? port : s->port);
    o.url = url;
    memset(out, 0, sizeof *out);
    cloud_http_send(h, &o, on_outcome, out);
    assert_int_equal(out->calls, 0); /* never before the send returns */
    test_run_until(loop, &out->calls);
    assert_int_equal(out->calls, 1);
}

static void test_http_client(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct cloud_http *h = cloud_http_new(&loop);
    assert_non_null(h);
    struct outcome out;

    /* A burst of 429s, then the answer: retried, and what was sent arrived whole. */
    const struct reply burst[] = {{429, "text/plain", "API requests too frequent"},
                                  {429, "text/plain", "API requests too frequent"},
                                  {200, "application/json", "{\"offers\":[]}"}};
    struct srv s = {.script = burst, .n_script = 3};
    srv_start(&s, &loop);
    roundtrip(&loop, h, &s, 0, fast_opts, &out);
    assert_int_equal(out.rc, 0);
    assert_int_equal(out.status, 200);
    assert_string_equal(out.body, "{\"offers\":[]}");
    assert_int_equal(out.attempts, 3);
    assert_int_equal(s.requests, 3);
    assert_non_null(strstr(s.last, "POST /api/v0/bundles/ HTTP/1.1\r\n"));
    assert_non_null(strcasestr(s.last, "\r\nAuthorization: Bearer sekrit\r\n"));
    assert_non_null(strcasestr(s.last, "\r\nContent-Type: application/json\r\n"));
    assert_non_null(strstr(s.last, "\r\n\r\n{\"q\":1}"));

    /* A server that keeps failing: every attempt made, the last answer delivered. */
    const struct reply down[] = {{503, "text/html", "<title>503</title>"}};
    s.script = down;
    s.n_script = 1;
    s.requests = 0;
    roundtrip(&loop, h, &s, 0, fast_opts, &out);
    assert_int_equal(out.status, 503);
    assert_int_equal(out.attempts, 4);
    assert_int_equal(s.requests, 4);
    assert_true(out.retryable);
    /* Not retried when the request does not allow it (a create's 5xx). */
    struct cloud_http_opts once = fast_opts;
    once.retry_on = CLOUD_RETRY_RATE;
    s.requests = 0;
    roundtrip(&loop, h, &s, 0, once, &out);
    assert_int_equal(out.attempts, 1);
    assert_int_equal(s.requests, 1);
    assert_false(out.retryable);
    /* A 4xx is an answer, not a failure to retry. */
    const struct reply refused[] = {{401, "application/json", "{\"msg\":\"Invalid user key\"}"}};
    s.script = refused;
    s.requests = 0;
    roundtrip(&loop, h, &s, 0, fast_opts, &out);
    assert_int_equal(out.status, 401);
    assert_int_equal(out.attempts, 1);

    /* An answer over the cap fails the attempt, and is not retried. */
    static char big[3000];
    memset(big, 'x', sizeof big - 1);
    const struct reply large[] = {{200, "application/json", big}};
    s.script = large;
    s.requests = 0;
    struct cloud_http_opts capped = fast_opts;
    capped.max_response = 1000;
    roundtrip(&loop, h, &s, 0, capped, &out);
    assert_int_equal(out.rc, -EMSGSIZE);
    assert_string_equal(out.transport, "the answer is larger than 1000 bytes");
    assert_int_equal(out.attempts, 1);

    /* Nothing listens: a transport failure, retried, then said in curl's words. */
    int dead = test_free_port();
    roundtrip(&loop, h, &s, dead, fast_opts, &out);
    assert_int_equal(out.rc, -ECONNREFUSED);
    assert_int_equal(out.attempts, 4);
    assert_non_null(strstr(out.transport, "onnect"));

    /* A request cancelled is never answered; one in flight at close is answered -ECANCELED. */
    s.hang = 1;
    s.requests = 0;
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/x/", s.port);
    struct cloud_http_opts o = fast_opts;
    o.url = url;
    struct outcome dropped = {0}, pending = {0};
    struct cloud_http_req *r = cloud_http_send(h, &o, on_outcome, &dropped);
    cloud_http_cancel(r);
    cloud_http_send(h, &o, on_outcome, &pending);
    int seen = 0;
    while (s.requests < 1 && !seen) {
        uv_run(&loop, UV_RUN_ONCE);
        seen = pending.calls;
    }
    assert_int_equal(pending.calls, 0);
    cloud_http_close(h);
    assert_int_equal(pending.calls, 1);
    assert_int_equal(pending.rc, -ECANCELED);
    assert_int_equal(dropped.calls, 0);

    uv_close((uv_handle_t *)&s.tcp, on_srv_closed);
    test_run_until(&loop, &s.closed);
    /* The client's handles are all closed: the loop ends empty. */
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_backoff),       cmocka_unit_test(test_query_floors),
        cmocka_unit_test(test_query_filters), cmocka_unit_test(test_check),
        cmocka_unit_test(test_rank),          cmocka_unit_test(test_rank_history),
        cmocka_unit_test(test_errors),        cmocka_unit_test(test_http_client),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
