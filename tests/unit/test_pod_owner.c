/* The pod runner's port_owner: reading what the pod says holds a port. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "runner/pod.h"

static void test_parse_owner(void **state)
{
    char d[512];
    /* The engine: bash leads the session and group (setsid), python is its child. */
    struct runner_proc pr = {.pid = 4000, .pgid = 4000};
    assert_int_equal(runner_pod__parse_owner("O 4012 4000 4000 python3 -m sglang.launch_server\n",
                                             &pr, 30000, "box", d, sizeof d),
                     RUNNER_OWNER_OURS);
    /* A child that made its own group stays in the session. */
    assert_int_equal(
        runner_pod__parse_owner("O 4013 4013 4000 python3\n", &pr, 30000, "box", d, sizeof d),
        RUNNER_OWNER_OURS);
    /* Someone else: named with its command and the pod. */
    assert_int_equal(runner_pod__parse_owner("O 777 770 770 python3 -m http.server 30000 \n", &pr,
                                             30000, "box", d, sizeof d),
                     RUNNER_OWNER_OTHER);
    assert_string_equal(d, "pid 777 (python3 -m http.server 30000) on pod 'box'");
    /* Ours and another (SO_REUSEPORT): the other one counts. */
    assert_int_equal(runner_pod__parse_owner("O 4012 4000 4000 vllm\nO 9 9 9 nc -l\n", &pr, 30000,
                                             "box", d, sizeof d),
                     RUNNER_OWNER_OTHER);
    assert_string_equal(d, "pid 9 (nc -l) on pod 'box'");
    assert_int_equal(runner_pod__parse_owner("N\n", &pr, 30000, "box", d, sizeof d),
                     RUNNER_OWNER_NONE);
    assert_int_equal(
        runner_pod__parse_owner("U ss is not installed\n", &pr, 30000, "box", d, sizeof d),
        RUNNER_OWNER_UNKNOWN);
    assert_non_null(strstr(d, "ss is not installed"));
    assert_int_equal(runner_pod__parse_owner("", &pr, 30000, "box", d, sizeof d),
                     RUNNER_OWNER_UNKNOWN);
    assert_int_equal(runner_pod__parse_owner("garbage\nO x y\n", &pr, 30000, "box", d, sizeof d),
                     RUNNER_OWNER_UNKNOWN);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_owner),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
