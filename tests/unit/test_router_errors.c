/* The router's error bodies: bytes from outside made valid UTF-8, engine bodies cut at a character.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "router/internal.h"

/* The message of the error body s (which must be JSON in OpenAI's shape); json_decref(*root) after.
 */
static const char *message_of(const char *s, json_t **root)
{
    json_error_t err;
    assert_non_null(s);
    *root = json_loads(s, 0, &err);
    assert_non_null(*root);
    json_t *e = json_object_get(*root, "error");
    assert_true(json_is_object(e));
    assert_non_null(json_object_get(e, "type"));
    assert_non_null(json_object_get(e, "param"));
    assert_non_null(json_object_get(e, "code"));
    const char *m = json_string_value(json_object_get(e, "message"));
    assert_non_null(m);
    return m;
}

static void test_error_json_invalid_utf8(void **state)
{
    (void)state;
    json_t *o = router__error_json(0, "invalid_request_error", "unknown_endpoint",
                                   "no endpoint GET /\xFF; yard serves ...");
    assert_non_null(o);
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    json_t *root;
    assert_string_equal(message_of(s, &root), "no endpoint GET /\xEF\xBF\xBD; yard serves ...");
    json_decref(root);
    free(s);

    o = router__error_json(1, "invalid_request_error", "model_not_found", "model '\xE2\x82' x");
    assert_non_null(o);
    assert_string_equal(json_string_value(json_object_get(o, "type")), "error");
    json_decref(o);
}

/* 'x' and 400 euro signs: byte 500 falls inside a character. */
static void test_engine_text_cut_inside_a_character(void **state)
{
    (void)state;
    char body[1 + 400 * 3];
    body[0] = 'x';
    for (int i = 0; i < 400; i++)
        memcpy(body + 1 + 3 * i, "\xE2\x82\xAC", 3);
    for (int anthropic = 0; anthropic < 2; anthropic++) {
        char *s = router__normalise_error(500, body, sizeof body, anthropic);
        json_t *root;
        const char *m = message_of(s, &root);
        assert_int_equal(strlen(m), 499); /* 'x' and 166 whole characters */
        assert_memory_equal(m, body, 499);
        json_decref(root);
        free(s);
    }
}

static void test_engine_text_invalid_bytes(void **state)
{
    (void)state;
    const char body[] = "Internal Server Error \xFF\xFE \xC3(";
    char *s = router__normalise_error(502, body, sizeof body - 1, 0);
    json_t *root;
    assert_string_equal(message_of(s, &root),
                        "Internal Server Error \xEF\xBF\xBD\xEF\xBF\xBD \xEF\xBF\xBD(");
    assert_string_equal(json_string_value(json_object_get(json_object_get(root, "error"), "type")),
                        "server_error");
    json_decref(root);
    free(s);
}

static void test_engine_json_and_empty(void **state)
{
    (void)state;
    const char *vllm = "{\"error\":{\"message\":\"bad \\u00e9\",\"type\":\"BadRequestError\","
                       "\"param\":null,\"code\":400}}";
    char *s = router__normalise_error(400, vllm, strlen(vllm), 0);
    json_t *root;
    assert_string_equal(message_of(s, &root), "bad \xC3\xA9");
    assert_true(json_is_null(json_object_get(json_object_get(root, "error"), "code")));
    json_decref(root);
    free(s);

    s = router__normalise_error(503, "", 0, 0);
    assert_string_equal(message_of(s, &root), "the engine answered 503");
    json_decref(root);
    free(s);
}

/* Every reason the scheduler gives has one answer; the statuses and codes are the API's. */
static void test_refusal_table(void **state)
{
    (void)state;
    for (int why = 0; why < SCHED_REASON_COUNT; why++) {
        const struct router__refusal *f = router__refusal_of((enum sched_reason)why);
        assert_non_null(f->code);
        assert_non_null(f->type);
        assert_true(f->status == 404 || f->status == 503);
        /* A 503 says when to come back; a 404 does not. */
        assert_true(f->status == 503 ? f->retry_after_s > 0 : f->retry_after_s == 0);
    }
    static const struct {
        enum sched_reason why;
        int status;
        const char *code;
    } pinned[] = {
        {SCHED_UNKNOWN_MODEL, 404, "model_not_found"},
        {SCHED_REMOVED, 404, "model_not_found"},
        {SCHED_QUEUE_FULL, 503, "queue_full"},
        {SCHED_WAIT_TIMEOUT, 503, "model_wait_timeout"},
        {SCHED_LOAD_FAILED, 503, "model_load_failed"},
        {SCHED_WAKE_FAILED, 503, "model_wake_failed"},
        {SCHED_BLOCKED_BY_PIN, 503, "model_blocked_by_pin"},
        {SCHED_NEVER_FITS, 503, "model_does_not_fit"},
        {SCHED_STATE_UNWRITABLE, 503, "state_unwritable"},
        {SCHED_HOST_UNREACHABLE, 503, "pod_unreachable"},
        {SCHED_SHUTTING_DOWN, 503, "shutting_down"},
    };
    assert_int_equal(sizeof pinned / sizeof pinned[0], SCHED_REASON_COUNT);
    for (size_t i = 0; i < sizeof pinned / sizeof pinned[0]; i++) {
        const struct router__refusal *f = router__refusal_of(pinned[i].why);
        assert_int_equal(f->status, pinned[i].status);
        assert_string_equal(f->code, pinned[i].code);
    }
    assert_int_equal(router__refusal_of(SCHED_QUEUE_FULL)->retry_after_s, 1);
    /* A reason out of range answers as a failed load, never reads past the table. */
    assert_string_equal(router__refusal_of((enum sched_reason)SCHED_REASON_COUNT)->code,
                        "model_load_failed");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_error_json_invalid_utf8),
        cmocka_unit_test(test_engine_text_cut_inside_a_character),
        cmocka_unit_test(test_engine_text_invalid_bytes),
        cmocka_unit_test(test_engine_json_and_empty),
        cmocka_unit_test(test_refusal_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
