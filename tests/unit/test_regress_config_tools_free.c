/*
 * Regression: the strings of 'tools' and 'gpu_ledger' must live as long as
 * the config. parse_router freed them whenever 'router.policy' was given,
 * leaving the config pointing at freed memory, and config_free never freed
 * them, so every config leaked its tool paths. Found by
 * tests/fuzz/fuzz_config.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include "config/config.h"

static void test_tools_survive_router_policy(void **state)
{
    (void)state;
    static const char yaml[] = "gpu_ledger: /var/lib/yard/ledger.json\n"
                               "tools: { criu: /usr/local/sbin/criu, nvidia_smi: /opt/bin/smi }\n"
                               "router: { policy: cost_aware }\n";
    struct config_errors e = {0};
    struct config *c = config_parse(yaml, sizeof yaml - 1, "yard.yaml", &e);
    assert_int_equal(e.n, 0);
    assert_non_null(c);
    assert_string_equal(c->router_policy, "cost_aware");
    assert_string_equal(c->gpu_ledger, "/var/lib/yard/ledger.json");
    assert_string_equal(c->tool_criu, "/usr/local/sbin/criu");
    assert_string_equal(c->tool_nvidia_smi, "/opt/bin/smi");
    assert_string_equal(c->tool_cuda_checkpoint, "cuda-checkpoint");
    config_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tools_survive_router_policy),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
