/*
 * The Slurm runner's readers (runner/slurm.h): scontrol's one-line answer,
 * final states and the one line a job's end becomes. The runner against a
 * real cluster is tests/e2e/slurm.test.mjs.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "runner/slurm.h"

/* A line as `scontrol -o show job` prints it (22.05), shortened. */
static const char timeout_line[] =
    "JobId=12 JobName=yard-m1 UserId=root(0) GroupId=root(0) MCS_label=N/A Priority=1 "
    "Nice=0 Account=(null) QOS=(null) JobState=TIMEOUT Reason=TimeLimit Dependency=(null) "
    "Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=0:15 RunTime=00:01:21 "
    "TimeLimit=00:01:00 NodeList=node-a BatchHost=node-a NumNodes=1 "
    "Command=/var/lib/yard/slurm/c1/m1-1-1.sh WorkDir=/root StdOut=/var/lib/yard/logs/m1.log\n";

static void test_parse_scontrol(void **state)
{
    (void)state;
    struct runner_slurm_job j;
    assert_int_equal(runner_slurm__parse_scontrol(timeout_line, &j), 0);
    assert_int_equal(j.id, 12);
    assert_string_equal(j.state, "TIMEOUT");
    assert_string_equal(j.reason, "TimeLimit");
    assert_string_equal(j.node, "node-a");
    assert_string_equal(j.name, "yard-m1");
    assert_int_equal(j.exit_code, 0);
    assert_int_equal(j.exit_signal, 15);

    /* A reason with spaces runs to the next Key=; a pending job has no node. */
    assert_int_equal(runner_slurm__parse_scontrol(
                         "JobId=7 JobName=yard-x JobState=PENDING Reason=QOSMaxGRESPerUser "
                         "waits Dependency=(null) ExitCode=0:0 NodeList=(null)",
                         &j),
                     0);
    assert_string_equal(j.reason, "QOSMaxGRESPerUser waits");
    assert_string_equal(j.node, "");
    assert_int_equal(j.exit_code, 0);

    assert_int_equal(runner_slurm__parse_scontrol("slurm_load_jobs error: Invalid job id", &j),
                     -EPROTO);
}

static void test_terminal(void **state)
{
    (void)state;
    static const char *const ends[] = {"COMPLETED", "FAILED",        "CANCELLED",
                                       "TIMEOUT",   "OUT_OF_MEMORY", "NODE_FAIL",
                                       "PREEMPTED", "BOOT_FAIL",     "DEADLINE"};
    for (size_t i = 0; i < sizeof ends / sizeof *ends; i++)
        assert_true(runner_slurm__terminal(ends[i]));
    /* scontrol writes "CANCELLED by 0" in some versions. */
    assert_true(runner_slurm__terminal("CANCELLED by 0"));
    static const char *const live[] = {"PENDING",     "RUNNING",   "COMPLETING",
                                       "CONFIGURING", "SUSPENDED", "REQUEUED"};
    for (size_t i = 0; i < sizeof live / sizeof *live; i++)
        assert_false(runner_slurm__terminal(live[i]));
}

static void ended(const char *state, int code, int sig, const char *want)
{
    struct runner_slurm_job j = {.id = 12, .exit_code = code, .exit_signal = sig};
    snprintf(j.state, sizeof j.state, "%s", state);
    snprintf(j.node, sizeof j.node, "node-a");
    char out[200];
    runner_slurm__ended_text(&j, out, sizeof out);
    assert_string_equal(out, want);
}

static void test_ended_text(void **state)
{
    (void)state;
    ended("TIMEOUT", 0, 15, "job 12 reached its time limit (TIMEOUT)");
    ended("OUT_OF_MEMORY", 0, 9, "job 12 ran out of memory (OUT_OF_MEMORY)");
    ended("NODE_FAIL", 0, 0, "job 12 lost its node node-a (NODE_FAIL)");
    ended("PREEMPTED", 0, 0, "job 12 was preempted (PREEMPTED)");
    ended("CANCELLED", 0, 15, "job 12 was cancelled outside yard (CANCELLED, killed by signal 15)");
    ended("FAILED", 3, 0, "job 12 failed (FAILED, exit code 3)");
    ended("COMPLETED", 0, 0, "job 12 ended: the engine exited 0 (COMPLETED)");
    ended("BOOT_FAIL", 0, 0, "job 12 ended BOOT_FAIL");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_scontrol),
        cmocka_unit_test(test_terminal),
        cmocka_unit_test(test_ended_text),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
