/*
 * base/log: the JSON format keeps every line, one JSON object each, whatever
 * bytes a message quotes (engine output, paths, names): invalid UTF-8 becomes
 * U+FFFD instead of the line being dropped.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include <jansson.h>

#include "base/log.h"

/* Runs the log calls of fn with stderr going to a temporary file; returns what was written. */
static char *capture_stderr(void (*fn)(void))
{
    fflush(stderr);
    FILE *tmp = tmpfile();
    assert_non_null(tmp);
    int saved = dup(STDERR_FILENO);
    assert_true(saved >= 0);
    assert_true(dup2(fileno(tmp), STDERR_FILENO) >= 0);
    fn();
    fflush(stderr);
    assert_true(dup2(saved, STDERR_FILENO) >= 0);
    close(saved);
    long n = ftell(tmp);
    assert_true(n >= 0);
    char *text = calloc(1, (size_t)n + 1);
    assert_non_null(text);
    rewind(tmp);
    assert_int_equal(fread(text, 1, (size_t)n, tmp), (size_t)n);
    fclose(tmp);
    return text;
}

static void log_invalid(void)
{
    log_warn("sup", "'%s' starting -> failed: %s", "m", "CUDA out of memory \xff\xfe tried");
    /* past the stack buffer: the allocated path */
    char big[2000];
    memset(big, 'x', sizeof big);
    big[sizeof big - 1] = '\0';
    big[1000] = (char)0xc3; /* a lead byte with no continuation */
    log_info("admin", "%s", big);
}

static void test_json_lines_with_invalid_bytes(void **state)
{
    (void)state;
    log_setup(LOG_INFO, LOG_FORMAT_JSON);
    char *text = capture_stderr(log_invalid);
    log_setup(LOG_INFO, LOG_FORMAT_TEXT);
    char *nl = strchr(text, '\n');
    assert_non_null(nl);
    json_t *a = json_loadb(text, (size_t)(nl - text), 0, NULL);
    assert_non_null(a);
    assert_string_equal(
        json_string_value(json_object_get(a, "msg")),
        "'m' starting -> failed: CUDA out of memory \xef\xbf\xbd\xef\xbf\xbd tried");
    assert_string_equal(json_string_value(json_object_get(a, "level")), "warn");
    json_t *b = json_loads(nl + 1, JSON_DISABLE_EOF_CHECK, NULL);
    assert_non_null(b);
    const char *msg = json_string_value(json_object_get(b, "msg"));
    assert_non_null(msg);
    assert_int_equal(strlen(msg), 1999 + 2); /* one byte became three */
    assert_memory_equal(msg + 1000, "\xef\xbf\xbd", 3);
    json_decref(a);
    json_decref(b);
    free(text);
}

static void log_multiline(void)
{
    log_setup(LOG_DEBUG, LOG_FORMAT_TEXT);
    log_error("sup", "'m' failed: %s", "first line\nsecond line\r\x01 end\ttab");
}

/* One event, one line: newlines in a message are written as \n, other controls as '?'. */
static void test_text_one_line(void **state)
{
    (void)state;
    unsetenv("JOURNAL_STREAM");
    char *text = capture_stderr(log_multiline);
    log_setup(LOG_INFO, LOG_FORMAT_TEXT);
    char *nl = strchr(text, '\n');
    assert_non_null(nl);
    assert_string_equal(nl + 1, "");
    assert_true(text[4] == '-' && text[10] == 'T' && text[23] == 'Z');
    assert_string_equal(text + 24,
                        " error sup: 'm' failed: first line\\nsecond line\\r? end\ttab\n");
    free(text);
}

/* JOURNAL_STREAM names stderr's device and inode, as the service manager sets it. */
static void set_journal_stream(void)
{
    struct stat st;
    assert_int_equal(fstat(STDERR_FILENO, &st), 0);
    char v[64];
    snprintf(v, sizeof v, "%llu:%llu", (unsigned long long)st.st_dev,
             (unsigned long long)st.st_ino);
    setenv("JOURNAL_STREAM", v, 1);
}

static void log_journal(void)
{
    set_journal_stream();
    log_setup(LOG_DEBUG, LOG_FORMAT_TEXT);
    log_error("serve", "a\nb");
    log_warn("serve", "w");
    log_info("serve", "i");
    log_debug("serve", "d");
    log_setup(LOG_INFO, LOG_FORMAT_JSON);
    log_warn("serve", "j");
    /* Another stream than stderr's: timestamps again. */
    setenv("JOURNAL_STREAM", "1:1", 1);
    log_setup(LOG_INFO, LOG_FORMAT_TEXT);
    log_info("serve", "not the journal");
    unsetenv("JOURNAL_STREAM");
}

/* Writing to the journal: the "<N>" priority of each level, and no timestamp of our own. */
static void test_journal_prefix(void **state)
{
    (void)state;
    char *text = capture_stderr(log_journal);
    log_setup(LOG_INFO, LOG_FORMAT_TEXT);
    const char *want = "<3>error serve: a\\nb\n"
                       "<4>warn  serve: w\n"
                       "<6>info  serve: i\n"
                       "<7>debug serve: d\n"
                       "<4>{\"ts\":\"";
    assert_memory_equal(text, want, strlen(want));
    char *json_nl = strchr(text + strlen(want), '\n');
    assert_non_null(json_nl);
    assert_non_null(
        strstr(text + strlen(want), "\"level\":\"warn\",\"module\":\"serve\",\"msg\":\"j\"}"));
    assert_true(json_nl[1] >= '0' && json_nl[1] <= '9'); /* a timestamp */
    assert_non_null(strstr(json_nl, "Z info  serve: not the journal\n"));
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_lines_with_invalid_bytes),
        cmocka_unit_test(test_text_one_line),
        cmocka_unit_test(test_journal_prefix),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
