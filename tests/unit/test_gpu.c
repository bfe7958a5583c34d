/* The GPU inventory: parsers, the declared source with its ledger, nvidia-smi through a
 * stand-in, NVML through a fake library, process trees, and `yard gpus`. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>

#include <cmocka.h>
#include <jansson.h>

#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#endif
#endif
#ifndef RUNNING_ON_VALGRIND
#define RUNNING_ON_VALGRIND 0
#endif

#include "base/alloc.h"
#include "base/proc.h"
#include "cli/cli.h"
#include "cli/gpus.h"
#include "gpu/gpu.h"
#include "runner/cgroup.h"

#define MIB (1024ull * 1024)
#define GIB (1024ull * MIB)

static const char smi_standin[] = YARD_SRC_DIR "/tests/e2e/fixtures/nvidia-smi";

/*
 * Whether posix_spawnp reports a program that cannot start (-ENOENT). glibc
 * does, through memory shared with its vfork-style child; valgrind runs that
 * child as a plain fork, so there posix_spawnp returns 0 and the child exits
 * with 127 (or valgrind's error exit code). The checks that need the report
 * are skipped under valgrind.
 */
static int spawn_reports_missing(void)
{
    return !RUNNING_ON_VALGRIND;
}

/* ---- helpers ---- */

static char *make_tmpdir(void)
{
    char tmpl[] = "/tmp/yard-test-gpu-XXXXXX";
    char *d = mkdtemp(tmpl);
    assert_non_null(d);
    return xstrdup(d);
}

static void remove_tree(const char *dir)
{
    char *cmd = xstrfmt("rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
    free(cmd);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    assert_int_equal(fclose(f), 0);
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* /proc/PID/stat's state letter, or 0 when the process is gone. */
static char proc_state(int pid)
{
    char path[64], buf[512];
    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *rp = strrchr(buf, ')');
    return rp && rp[1] == ' ' ? rp[2] : 0;
}

/* Polls until pid is a zombie or gone, with a deadline. */
static void wait_dead(int pid)
{
    uint64_t deadline = now_ms() + 5000;
    while (now_ms() < deadline) {
        char s = proc_state(pid);
        if (s == 0 || s == 'Z' || s == 'X')
            return;
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    fail_msg("pid %d did not die", pid);
}

/* A pid that existed and is now gone: a child forked, exited and reaped. */
static int dead_pid(void)
{
    pid_t p = fork();
    assert_true(p >= 0);
    if (p == 0)
        _exit(0);
    assert_int_equal(waitpid(p, NULL, 0), p);
    return p;
}

/* A child that has exited but is not reaped: the caller reaps it. */
static int zombie_pid(void)
{
    pid_t p = fork();
    assert_true(p >= 0);
    if (p == 0)
        _exit(0);
    wait_dead(p);
    assert_int_equal(proc_state(p), 'Z');
    return p;
}

static struct gpu_dev *dev_of(struct gpu_inventory *inv, int index)
{
    for (size_t i = 0; i < inv->n; i++)
        if (inv->devs[i].index == index)
            return &inv->devs[i];
    fail_msg("no GPU %d", index);
    return NULL;
}

static void declared_inventory(struct gpu_inventory *inv)
{
    memset(inv, 0, sizeof(*inv));
    inv->n = 2;
    inv->devs = xcalloc(2, sizeof(*inv->devs));
    inv->devs[0].index = 0;
    inv->devs[0].total = 80 * GIB;
    inv->devs[1].index = 1;
    inv->devs[1].total = 24 * GIB;
}

static json_t *parse_json(const char *s)
{
    json_error_t e;
    json_t *j = json_loads(s, 0, &e);
    if (!j)
        fail_msg("bad test json: %s", e.text);
    return j;
}

/* ---- nvidia-smi CSV ---- */

static void test_parse_smi_gpus(void **state)
{
    struct gpu_inventory inv = {0};
    char *err = NULL;
    /* The reference's example, an H100, and a GB10 with unified memory. */
    const char *csv = "0, GPU-78aaaccb-1234-5678-9abc-def012345678, NVIDIA H200, 144384, 45558, "
                      "98826\n"
                      "1, GPU-11111111-2222-3333-4444-555555555555, NVIDIA H100 80GB HBM3, 81559, "
                      "0, 81080\r\n"
                      "\n"
                      "2, GPU-22222222-2222-3333-4444-555555555555, NVIDIA GB10, [N/A], [N/A], "
                      "[N/A]\n";
    assert_int_equal(gpu__parse_smi_gpus(csv, &inv, &err), 0);
    assert_null(err);
    assert_int_equal(inv.n, 3);
    struct gpu_dev *d = &inv.devs[0];
    assert_int_equal(d->index, 0);
    assert_string_equal(d->uuid, "GPU-78aaaccb-1234-5678-9abc-def012345678");
    assert_string_equal(d->name, "NVIDIA H200");
    assert_true(d->total == 144384 * MIB);
    assert_true(d->used == 45558 * MIB);
    assert_true(d->free == 98826 * MIB);
    assert_int_equal(d->n_procs, 0);
    d = &inv.devs[1];
    assert_string_equal(d->name, "NVIDIA H100 80GB HBM3");
    assert_true(d->used == 0 && d->free == 81080 * MIB);
    /* Unknown memory: no total, used unknown, nothing free. */
    d = &inv.devs[2];
    assert_string_equal(d->name, "NVIDIA GB10");
    assert_true(d->total == 0);
    assert_true(d->used == UINT64_MAX);
    assert_true(d->free == 0);
    gpu_inventory_release(&inv);

    /* Only used is unknown: free is still what the tool says. */
    assert_int_equal(gpu__parse_smi_gpus("3, GPU-x, A, 1000, [Not Supported], 900\n", &inv, &err),
                     0);
    assert_true(inv.devs[0].used == UINT64_MAX && inv.devs[0].free == 900 * MIB);
    gpu_inventory_release(&inv);

    /* A comma in a name does no harm: the memory columns are counted from the right. */
    assert_int_equal(gpu__parse_smi_gpus("0, GPU-a, Odd, Name, 10, 2, 8", &inv, &err), 0);
    assert_string_equal(inv.devs[0].name, "Odd, Name");
    gpu_inventory_release(&inv);

    static const char *const bad[] = {
        "0, GPU-a, NVIDIA H200, 144384, 45558\n", /* a column short */
        "x, GPU-a, NVIDIA H200, 1, 1, 0\n",       /* index */
        "0, GPU-a, NVIDIA H200, 1 MiB, 1, 0\n",   /* units despite nounits */
        "index, uuid, name, memory.total [MiB], memory.used [MiB], memory.free [MiB]\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char *text = xstrfmt("0, GPU-ok, A, 1, 1, 0\n%s", bad[i]);
        assert_int_equal(gpu__parse_smi_gpus(text, &inv, &err), -EINVAL);
        assert_non_null(err);
        assert_non_null(strstr(err, "line 2"));
        free(err);
        err = NULL;
        free(text);
        gpu_inventory_release(&inv);
    }
}

static void test_parse_smi_apps(void **state)
{
    struct gpu_inventory inv = {0};
    char *err = NULL;
    assert_int_equal(gpu__parse_smi_gpus("0, GPU-aaa, NVIDIA H200, 144384, 45558, 98826\n"
                                         "1, GPU-bbb, NVIDIA H200, 144384, 0, 144384\n",
                                         &inv, &err),
                     0);
    const char *apps = "GPU-aaa, 3858903, VLLM::EngineCore, 6265\n"
                       "GPU-bbb, 42, python3 -m sglang, launch, [N/A]\n"
                       "GPU-gone, 43, ghost, 100\n" /* a GPU not in the first answer */
                       "GPU-aaa, 44, , 1\n";
    assert_int_equal(gpu__parse_smi_apps(apps, &inv, &err), 0);
    assert_null(err);
    struct gpu_dev *a = dev_of(&inv, 0), *b = dev_of(&inv, 1);
    assert_int_equal(a->n_procs, 2);
    assert_int_equal(a->procs[0].pid, 3858903);
    assert_string_equal(a->procs[0].name, "VLLM::EngineCore");
    assert_true(a->procs[0].used == 6265 * MIB);
    assert_int_equal(a->procs[1].pid, 44);
    assert_string_equal(a->procs[1].name, "");
    assert_int_equal(b->n_procs, 1);
    assert_string_equal(b->procs[0].name, "python3 -m sglang, launch");
    assert_true(b->procs[0].used == UINT64_MAX);

    /* Nothing running: no lines at all. */
    assert_int_equal(gpu__parse_smi_apps("", &inv, &err), 0);
    assert_int_equal(gpu__parse_smi_apps("No running processes found\n", &inv, &err), 0);

    assert_int_equal(gpu__parse_smi_apps("GPU-aaa, notapid, x, 1\n", &inv, &err), -EINVAL);
    assert_non_null(strstr(err, "line 1"));
    free(err);
    err = NULL;
    assert_int_equal(gpu__parse_smi_apps("GPU-aaa, 1, 5\n", &inv, &err), -EINVAL);
    free(err);
    gpu_inventory_release(&inv);
}

/* ---- the ledger ---- */

static void test_parse_ledger(void **state)
{
    struct gpu_inventory inv;
    declared_inventory(&inv);
    int dead = dead_pid();
    int zombie = zombie_pid();
    int me = (int)getpid();
    char *text = xstrfmt("%d 0 %llu qwen-7b\n"
                         "%d 1 %llu llama 70b q4\n"
                         "%d 0 %llu dead-one\n"   /* reaped: stale */
                         "%d 0 %llu zombie-one\n" /* exited, holds nothing */
                         "%d 7 %llu elsewhere\n"  /* a GPU not declared */
                         "\n",
                         me, 10 * GIB, me, 30 * GIB, dead, 5 * GIB, zombie, 5 * GIB, me, GIB);
    assert_int_equal(gpu__parse_ledger(text, &inv), 0);
    free(text);
    struct gpu_dev *d0 = dev_of(&inv, 0), *d1 = dev_of(&inv, 1);
    assert_int_equal(d0->n_procs, 1);
    assert_int_equal(d0->procs[0].pid, me);
    assert_string_equal(d0->procs[0].name, "qwen-7b");
    assert_true(d0->procs[0].used == 10 * GIB);
    assert_true(d0->used == 10 * GIB && d0->free == 70 * GIB);
    /* More used than declared: free stops at 0. */
    assert_int_equal(d1->n_procs, 1);
    assert_string_equal(d1->procs[0].name, "llama 70b q4");
    assert_true(d1->used == 30 * GIB && d1->free == 0);
    gpu_inventory_release(&inv);
    assert_int_equal(waitpid(zombie, NULL, 0), zombie);

    declared_inventory(&inv);
    assert_int_equal(gpu__parse_ledger("", &inv), 0);
    assert_true(inv.devs[0].free == 80 * GIB);
    assert_int_equal(gpu__parse_ledger("12 zero 5 x\n", &inv), -EINVAL);
    assert_int_equal(gpu__parse_ledger("12 0 -5 x\n", &inv), -EINVAL);
    assert_int_equal(gpu__parse_ledger("0 0 5 x\n", &inv), -EINVAL);
    gpu_inventory_release(&inv);
}

static void test_pid_alive(void **state)
{
    assert_int_equal(proc_alive((int)getpid()), 1);
    assert_int_equal(proc_alive(1), 1); /* EPERM or not, it exists */
    assert_int_equal(proc_alive(dead_pid()), 0);
    int z = zombie_pid();
    assert_int_equal(proc_alive(z), 0);
    waitpid(z, NULL, 0);
    assert_int_equal(proc_alive(0), 0);
    assert_int_equal(proc_alive(-1), 0);

    /* A command name may hold spaces and parentheses: fields follow the last ')'. */
    struct proc_stat st;
    assert_int_equal(proc_stat_parse("42 (VLLM::Engine) (x) S 7 40 39 0 -1 4194564 99 0 0 0 0 0 0 "
                                     "0 20 0 1 0 3401776 3133440 414",
                                     &st),
                     0);
    assert_true(st.state == 'S' && st.ppid == 7 && st.pgrp == 40 && st.sid == 39);
    assert_int_equal(st.flags, 4194564u); /* PF_EXITING (4) among them */
    assert_int_equal(st.start, 3401776u);
    assert_int_equal(proc_stat_parse("42 (cut) S 7 40 39 0 -1 4194564 99 0 0", &st), -EINVAL);
    assert_int_equal(proc_stat_parse("42 (no close S 7 40 39", &st), -EINVAL);
    assert_int_equal(proc_stat_parse("42 (short) S 7", &st), -EINVAL);
    assert_int_equal(proc_stat_read((int)getpid(), &st), 0);
    assert_int_equal(st.ppid, (int)getppid());
    assert_int_equal(proc_stat_read(dead_pid(), &st), -ENOENT);
    /* running, gone, or a zombie: dying is said of the last two only */
    assert_int_equal(proc_dying((int)getpid()), 0);
    assert_int_equal(proc_dying(dead_pid()), 1);
    int zz = zombie_pid();
    assert_int_equal(proc_dying(zz), 1);
    waitpid(zz, NULL, 0);
}

static void test_declared_read(void **state)
{
    char *dir = make_tmpdir();
    char *ledger = xstrfmt("%s/ledger", dir);
    struct gpu_decl decl[2] = {{0, "NVIDIA H100 80GB HBM3", 80 * GIB}, {1, "RTX 4090", 24 * GIB}};
    struct gpu *g = gpu_new(decl, 2, ledger, "/nonexistent/nvidia-smi");
    struct gpu_inventory inv;
    char *err = NULL;

    /* No engine wrote the ledger yet: nothing is used. */
    assert_int_equal(gpu_read(g, &inv, &err), 0);
    assert_null(err);
    assert_string_equal(inv.source, "declared");
    assert_int_equal(inv.n, 2);
    assert_string_equal(inv.devs[0].name, "NVIDIA H100 80GB HBM3");
    assert_string_equal(inv.devs[0].uuid, "");
    assert_true(inv.devs[0].used == 0 && inv.devs[0].free == 80 * GIB);
    assert_true(inv.devs[1].total == 24 * GIB);
    gpu_inventory_release(&inv);

    int dead = dead_pid();
    char *text =
        xstrfmt("%d 1 %llu qwen-7b\n%d 1 %llu stale\n", (int)getpid(), 10 * GIB, dead, 10 * GIB);
    write_file(ledger, text);
    free(text);
    assert_int_equal(gpu_read(g, &inv, &err), 0);
    assert_true(inv.devs[0].used == 0);
    assert_true(inv.devs[1].used == 10 * GIB && inv.devs[1].free == 14 * GIB);
    assert_int_equal(inv.devs[1].n_procs, 1);

    json_t *j = gpu_inventory_json(&inv);
    json_t *want = parse_json(
        "{\"source\":\"declared\",\"gpus\":["
        "{\"index\":0,\"uuid\":\"\",\"name\":\"NVIDIA H100 80GB HBM3\",\"total\":85899345920,"
        "\"used\":0,\"free\":85899345920,\"processes\":[]},"
        "{\"index\":1,\"uuid\":\"\",\"name\":\"RTX 4090\",\"total\":25769803776,"
        "\"used\":10737418240,\"free\":15032385536,\"processes\":["
        "{\"pid\":0,\"used\":10737418240,\"name\":\"qwen-7b\",\"model\":null}]}]}");
    json_object_set_new(
        json_array_get(
            json_object_get(json_array_get(json_object_get(want, "gpus"), 1), "processes"), 0),
        "pid", json_integer(getpid()));
    assert_true(json_equal(j, want));
    json_decref(j);
    json_decref(want);
    gpu_inventory_release(&inv);

    /* A corrupt ledger is an error that names it. */
    write_file(ledger, "garbage\n");
    assert_int_equal(gpu_read(g, &inv, &err), -EINVAL);
    assert_non_null(strstr(err, ledger));
    assert_int_equal(inv.n, 0);
    free(err);
    gpu_free(g);

    /* Declared without a ledger: all free. */
    g = gpu_new(decl, 1, NULL, NULL);
    assert_int_equal(gpu_read(g, &inv, NULL), 0);
    assert_true(inv.n == 1 && inv.devs[0].free == 80 * GIB);
    gpu_inventory_release(&inv);
    gpu_free(g);

    free(ledger);
    remove_tree(dir);
    free(dir);
}

/* ---- process trees ---- */

static void test_pid_owned_by(void **state)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    /* root (own group) -> child (root's group) -> grandchild (its own group). */
    pid_t root = fork();
    assert_true(root >= 0);
    if (root == 0) {
        close(fds[0]);
        setpgid(0, 0);
        pid_t child = fork();
        if (child == 0) {
            pid_t grand = fork();
            if (grand == 0) {
                setpgid(0, 0);
                int m[2] = {'g', (int)getpid()};
                if (write(fds[1], m, sizeof(m)) != sizeof(m))
                    _exit(1);
                for (;;)
                    pause();
            }
            int m[2] = {'c', (int)getpid()};
            if (write(fds[1], m, sizeof(m)) != sizeof(m))
                _exit(1);
            for (;;)
                pause();
        }
        for (;;)
            pause();
    }
    close(fds[1]);
    int child = 0, grand = 0;
    for (int i = 0; i < 2; i++) {
        int m[2];
        assert_int_equal(read(fds[0], m, sizeof(m)), sizeof(m));
        if (m[0] == 'c')
            child = m[1];
        else
            grand = m[1];
    }
    close(fds[0]);
    assert_true(child > 0 && grand > 0);

    assert_int_equal(runner_pid_owned_by(root, root, root), 1);
    assert_int_equal(runner_pid_owned_by(child, root, 0), 1); /* the tree */
    assert_int_equal(runner_pid_owned_by(grand, root, 0), 1); /* two levels down */
    assert_int_equal(runner_pid_owned_by(child, 0, root), 1); /* the group */
    assert_int_equal(runner_pid_owned_by(grand, 0, root), 0); /* left the group */
    assert_int_equal(runner_pid_owned_by((int)getpid(), root, root), 0);
    assert_int_equal(runner_pid_owned_by(grand, child, 0), 1);
    assert_int_equal(runner_pid_owned_by(child, grand, grand), 0);
    assert_int_equal(runner_pid_owned_by(dead_pid(), root, root), 0);
    assert_int_equal(runner_pid_owned_by(0, root, root), 0);

    /* The middle process dies: the grandchild is reparented, out of the tree. */
    kill(child, SIGKILL);
    wait_dead(child);
    assert_int_equal(runner_pid_owned_by(grand, root, 0), 0);

    kill(grand, SIGKILL);
    kill(-root, SIGKILL);
    assert_int_equal(waitpid(root, NULL, 0), root);
}

/* ---- running a program ---- */

static void test_run_capture(void **state)
{
    struct gpu__capture cap;
    char *both[] = {"sh", "-c", "echo out; echo err >&2; exit 3", NULL};
    assert_int_equal(gpu__run_capture(both, 5000, 4096, &cap), 0);
    assert_string_equal(cap.out, "out\n");
    assert_string_equal(cap.err, "err\n");
    assert_int_equal(cap.status, 3);
    gpu__capture_release(&cap);

    /* A large answer within the bound grows the buffer. */
    char *big[] = {"sh", "-c", "head -c 200000 /dev/zero | tr '\\0' x", NULL};
    assert_int_equal(gpu__run_capture(big, 5000, 1 << 20, &cap), 0);
    assert_int_equal(cap.out_len, 200000);
    gpu__capture_release(&cap);

    char *chatty[] = {"sh", "-c", "yes", NULL};
    assert_int_equal(gpu__run_capture(chatty, 5000, 10000, &cap), -EMSGSIZE);
    gpu__capture_release(&cap);

    uint64_t t0 = now_ms();
    char *slow[] = {"sleep", "30", NULL};
    assert_int_equal(gpu__run_capture(slow, 200, 4096, &cap), -ETIMEDOUT);
    assert_true(now_ms() - t0 < 5000);
    assert_int_equal(cap.status, 128 + SIGKILL);
    gpu__capture_release(&cap);

    if (!spawn_reports_missing())
        return;
    char *none[] = {"/nonexistent/yard-no-such-program", NULL};
    assert_int_equal(gpu__run_capture(none, 1000, 4096, &cap), -ENOENT);
    char *none_in_path[] = {"yard-no-such-program-in-path", NULL};
    assert_int_equal(gpu__run_capture(none_in_path, 1000, 4096, &cap), -ENOENT);
}

/* ---- nvidia-smi through the stand-in ---- */

static void test_smi_standin(void **state)
{
    struct gpu_inventory inv;
    char *err = NULL;
    char *apps = xstrfmt("0,%d,VLLM::EngineCore,10240;1,77,python3, odd,[N/A]", (int)getpid());
    setenv("YARD_FAKE_GPUS",
           "0,NVIDIA H100 80GB HBM3,81559;1,NVIDIA H100 80GB HBM3,81559;2,"
           "NVIDIA GB10,[N/A]",
           1);
    setenv("YARD_FAKE_GPU_APPS", apps, 1);
    free(apps);

    struct gpu *g = gpu_new(NULL, 0, NULL, smi_standin);
    assert_int_equal(gpu_set_nvml(g, NULL), 0); /* this host might have NVML */
    assert_int_equal(gpu_read(g, &inv, &err), 0);
    assert_null(err);
    assert_string_equal(inv.source, "nvidia-smi");
    assert_int_equal(inv.n, 3);
    struct gpu_dev *d = dev_of(&inv, 0);
    assert_string_equal(d->name, "NVIDIA H100 80GB HBM3");
    assert_string_equal(d->uuid, "GPU-00000000-0000-0000-0000-000000000000");
    assert_true(d->total == 81559 * MIB);
    assert_true(d->used == 10240 * MIB && d->free == (81559 - 10240) * MIB);
    assert_int_equal(d->n_procs, 1);
    assert_int_equal(d->procs[0].pid, (int)getpid());
    assert_string_equal(d->procs[0].name, "VLLM::EngineCore");
    d = dev_of(&inv, 1);
    assert_int_equal(d->n_procs, 1);
    assert_string_equal(d->procs[0].name, "python3, odd");
    assert_true(d->procs[0].used == UINT64_MAX);
    d = dev_of(&inv, 2);
    assert_true(d->total == 0 && d->used == UINT64_MAX && d->free == 0);

    json_t *j = gpu_inventory_json(&inv);
    json_t *g1 = json_array_get(json_object_get(j, "gpus"), 1);
    assert_true(
        json_is_null(json_object_get(json_array_get(json_object_get(g1, "processes"), 0), "used")));
    json_t *g2 = json_array_get(json_object_get(j, "gpus"), 2);
    assert_true(json_is_null(json_object_get(g2, "used")));
    assert_int_equal(json_integer_value(json_object_get(g2, "total")), 0);
    json_decref(j);
    gpu_inventory_release(&inv);

    /* A driver without GPUs. */
    setenv("YARD_FAKE_GPUS", "", 1);
    assert_int_equal(gpu_read(g, &inv, &err), 0);
    assert_string_equal(inv.source, "nvidia-smi");
    assert_int_equal(inv.n, 0);
    gpu_inventory_release(&inv);

    /* An nvidia-smi that cannot talk to the driver: its line is the error. */
    unsetenv("YARD_FAKE_GPUS");
    assert_int_equal(gpu_read(g, &inv, &err), -EIO);
    assert_non_null(err);
    assert_non_null(strstr(err, "NVIDIA-SMI has failed because it couldn't communicate with the "
                                "NVIDIA driver"));
    assert_non_null(strstr(err, "status 9"));
    assert_null(inv.devs);
    free(err);
    err = NULL;
    gpu_free(g);
    unsetenv("YARD_FAKE_GPU_APPS");

    /* The stand-in rejects command lines the real tool would. */
    struct gpu__capture cap;
    char *argv[] = {(char *)smi_standin, "--query-gpu=index,name", "--format=csv", NULL};
    assert_int_equal(gpu__run_capture(argv, 5000, 4096, &cap), 0);
    assert_int_equal(cap.status, 2);
    assert_non_null(strstr(cap.out, "Invalid combination of input arguments"));
    gpu__capture_release(&cap);
}

static void test_no_source(void **state)
{
    struct gpu_inventory inv;
    char *err = NULL;
    static const char *const progs[] = {"/nonexistent/nvidia-smi", "yard-no-such-nvidia-smi"};
    if (!spawn_reports_missing())
        skip();
    for (size_t i = 0; i < 2; i++) {
        struct gpu *g = gpu_new(NULL, 0, NULL, progs[i]);
        assert_int_equal(gpu_set_nvml(g, ""), 0);
        assert_int_equal(gpu_read(g, &inv, &err), 0);
        assert_null(err);
        assert_string_equal(inv.source, "none");
        assert_int_equal(inv.n, 0);
        json_t *j = gpu_inventory_json(&inv);
        assert_string_equal(json_string_value(json_object_get(j, "source")), "none");
        assert_int_equal(json_array_size(json_object_get(j, "gpus")), 0);
        json_decref(j);
        gpu_inventory_release(&inv);
        gpu_free(g);
    }
}

/* ---- NVML through a fake library ---- */

static const char fake_nvml_src[] =
    "#include <string.h>\n"
    "#include <unistd.h>\n"
    "struct mem { unsigned long long total, free, used; };\n"
    "#ifdef OLD\n"
    "struct proc { unsigned int pid; unsigned long long used; };\n"
    "#define V(name) name\n"
    "#else\n"
    "struct proc { unsigned int pid; unsigned long long used; unsigned int gi, ci; };\n"
    "#define V(name) name##_v2\n"
    "#endif\n"
    "static int devs[2];\n"
    "#ifdef FAIL_INIT\n"
    "int V(nvmlInit)(void) { return 9; }\n"
    "#else\n"
    "int V(nvmlInit)(void) { return 0; }\n"
    "#endif\n"
    "int nvmlShutdown(void) { return 0; }\n"
    "const char *nvmlErrorString(int r) { return r == 9 ? \"Driver Not Loaded\" : \"Unknown "
    "Error\"; }\n"
    "int V(nvmlDeviceGetCount)(unsigned int *n) { *n = 2; return 0; }\n"
    "int V(nvmlDeviceGetHandleByIndex)(unsigned int i, void **h) {\n"
    "  if (i > 1) return 2; *h = &devs[i]; return 0; }\n"
    "int nvmlDeviceGetName(void *h, char *b, unsigned int n) {\n"
    "  strncpy(b, h == &devs[0] ? \"NVIDIA H100 80GB HBM3\" : \"NVIDIA GB10\", n); return 0; }\n"
    "int nvmlDeviceGetUUID(void *h, char *b, unsigned int n) {\n"
    "  strncpy(b, h == &devs[0] ? \"GPU-aaaa\" : \"GPU-bbbb\", n); return 0; }\n"
    "int nvmlDeviceGetMemoryInfo(void *h, struct mem *m) {\n"
    "  if (h != &devs[0]) return 3;\n"
    "  m->total = 80ull << 30; m->used = 10ull << 30; m->free = 70ull << 30; return 0; }\n"
    "#ifdef OLD\n"
    "int nvmlDeviceGetComputeRunningProcesses(void *h, unsigned int *n, struct proc *p) {\n"
    "#else\n"
    "int nvmlDeviceGetComputeRunningProcesses_v3(void *h, unsigned int *n, struct proc *p) {\n"
    "#endif\n"
    "  if (h != &devs[0]) return 3;\n"
    "  if (*n < 20) { *n = 20; return 7; }\n"
    "  for (unsigned int i = 0; i < 20; i++) {\n"
    "    memset(&p[i], 0, sizeof(p[i]));\n"
    "    p[i].pid = i == 0 ? (unsigned int)getpid() : 4000000 + i;\n"
    "    p[i].used = i == 1 ? ~0ull : (unsigned long long)i << 20; }\n"
    "  *n = 20; return 0; }\n";

/* Builds the fake NVML with cc into dir; NULL (the test is skipped) without a compiler. */
static char *build_fake_nvml(const char *dir, const char *name, const char *defs)
{
    char *src = xstrfmt("%s/fake-nvml.c", dir);
    write_file(src, fake_nvml_src);
    char *lib = xstrfmt("%s/%s", dir, name);
    char *cmd = xstrfmt("cc -shared -fPIC %s -o '%s' '%s' 2>/dev/null", defs, lib, src);
    int rc = system(cmd);
    free(cmd);
    free(src);
    if (rc != 0) {
        free(lib);
        return NULL;
    }
    return lib;
}

static void check_fake_nvml(const char *lib)
{
    struct gpu *g = gpu_new(NULL, 0, NULL, "/nonexistent/nvidia-smi");
    struct gpu_inventory inv;
    char *err = NULL;
    assert_int_equal(gpu_set_nvml(g, lib), 0);
    assert_int_equal(gpu_read(g, &inv, &err), 0);
    assert_null(err);
    assert_string_equal(inv.source, "nvml");
    assert_int_equal(inv.n, 2);
    struct gpu_dev *d = &inv.devs[0];
    assert_int_equal(d->index, 0);
    assert_string_equal(d->name, "NVIDIA H100 80GB HBM3");
    assert_string_equal(d->uuid, "GPU-aaaa");
    assert_true(d->total == 80 * GIB && d->used == 10 * GIB && d->free == 70 * GIB);
    /* 20 processes: more than the first buffer holds, so it asked again. */
    assert_int_equal(d->n_procs, 20);
    /* The fake names this test as the first process: its name comes from /proc. */
    assert_int_equal(d->procs[0].pid, (int)getpid());
    assert_string_equal(d->procs[0].name, "test_gpu");
    assert_true(d->procs[0].used == 0);
    assert_true(d->procs[1].used == UINT64_MAX);
    assert_true(d->procs[5].used == 5 * MIB);
    assert_int_equal(d->procs[5].pid, 4000005);
    d = &inv.devs[1];
    assert_string_equal(d->uuid, "GPU-bbbb");
    assert_true(d->total == 0 && d->used == UINT64_MAX); /* memory NOT_SUPPORTED */
    assert_int_equal(d->n_procs, 0);                     /* processes NOT_SUPPORTED */
    gpu_inventory_release(&inv);
    /* Initialised once; later reads reuse it. */
    assert_int_equal(gpu_read(g, &inv, &err), 0);
    assert_int_equal(inv.n, 2);
    assert_int_equal(gpu_set_nvml(g, NULL), -EBUSY);
    gpu_inventory_release(&inv);
    gpu_free(g);
}

/* Reads from several threads at once, as overlapping thread-pool reads do. */
static void *reader(void *arg)
{
    for (int i = 0; i < 5; i++) {
        struct gpu_inventory inv;
        if (gpu_read(arg, &inv, NULL) != 0 || inv.n != 2)
            return (void *)1;
        gpu_inventory_release(&inv);
    }
    return NULL;
}

static void check_overlapping_reads(const char *lib)
{
    struct gpu *g = gpu_new(NULL, 0, NULL, "/nonexistent/nvidia-smi");
    gpu_set_nvml(g, lib);
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&t[i], NULL, reader, g), 0);
    for (int i = 0; i < 4; i++) {
        void *r;
        pthread_join(t[i], &r);
        assert_null(r);
    }
    gpu_free(g);
}

static void test_nvml_fake(void **state)
{
    char *dir = make_tmpdir();
    char *lib = build_fake_nvml(dir, "libnvidia-ml-new.so", "");
    if (!lib) {
        remove_tree(dir);
        free(dir);
        skip();
    }
    check_fake_nvml(lib);
    check_overlapping_reads(lib);
    free(lib);

    /* A driver old enough to have only the unversioned names (and v1 process records). */
    lib = build_fake_nvml(dir, "libnvidia-ml-old.so", "-DOLD");
    assert_non_null(lib);
    check_fake_nvml(lib);
    free(lib);

    /* The library is there but the driver is not. */
    lib = build_fake_nvml(dir, "libnvidia-ml-noinit.so", "-DFAIL_INIT");
    assert_non_null(lib);
    struct gpu *g;
    struct gpu_inventory inv;
    char *err = NULL;
    if (spawn_reports_missing()) {
        g = gpu_new(NULL, 0, NULL, "/nonexistent/nvidia-smi");
        gpu_set_nvml(g, lib);
        assert_int_equal(gpu_read(g, &inv, &err), -EIO);
        assert_non_null(strstr(err, "Driver Not Loaded"));
        free(err);
        gpu_free(g);
    }
    /* ... then nvidia-smi, when there is one, has the last word. */
    setenv("YARD_FAKE_GPUS", "0,NVIDIA H100 80GB HBM3,81559", 1);
    g = gpu_new(NULL, 0, NULL, smi_standin);
    gpu_set_nvml(g, lib);
    assert_int_equal(gpu_read(g, &inv, &err), 0);
    assert_string_equal(inv.source, "nvidia-smi");
    assert_int_equal(inv.n, 1);
    gpu_inventory_release(&inv);
    gpu_free(g);
    unsetenv("YARD_FAKE_GPUS");
    free(lib);

    /* A library that is not there at all is no NVML. */
    if (spawn_reports_missing()) {
        g = gpu_new(NULL, 0, NULL, "/nonexistent/nvidia-smi");
        gpu_set_nvml(g, "/nonexistent/libnvidia-ml.so.1");
        assert_int_equal(gpu_read(g, &inv, &err), 0);
        assert_string_equal(inv.source, "none");
        gpu_free(g);
    }

    remove_tree(dir);
    free(dir);
}

/* ---- process names ---- */

static void test_proc_name(void **state)
{
    char name[64];
    gpu__proc_name((int)getpid(), name, sizeof(name));
    assert_string_equal(name, "test_gpu");
    gpu__proc_name(dead_pid(), name, sizeof(name));
    assert_string_equal(name, "");

    struct gpu_dev d = {0};
    gpu__dev_add_proc(&d, 5, 1, "evil\nname\x1b[31m");
    assert_string_equal(d.procs[0].name, "evil?name?[31m");
    free(d.procs);
}

/* ---- yard gpus ---- */

static const char answer[] =
    "{\"source\":\"nvml\",\"gpus\":["
    "{\"index\":0,\"uuid\":\"GPU-a\",\"name\":\"NVIDIA H100 80GB HBM3\",\"total\":85899345920,"
    "\"used\":12884901888,\"free\":73014444032,\"processes\":["
    "{\"pid\":1234,\"used\":10737418240,\"name\":\"VLLM::EngineCore\",\"model\":\"qwen-7b\"},"
    "{\"pid\":99,\"used\":2147483648,\"name\":\"python3\",\"model\":null}]},"
    "{\"index\":1,\"uuid\":\"GPU-b\",\"name\":\"GB10\",\"total\":0,"
    "\"used\":null,\"free\":0,\"processes\":["
    "{\"pid\":7,\"used\":null,\"name\":\"llama-server\",\"model\":\"tiny\"}]}]}";

static const char table[] = "GPU  NAME                   MEMORY           FREE\n"
                            "0    NVIDIA H100 80GB HBM3  12.0GiB/80.0GiB  68.0GiB\n"
                            "  pid 1234 VLLM::EngineCore 10.0GiB  qwen-7b\n"
                            "  pid 99 python3 2.0GiB  (not yard's)\n"
                            "1    GB10                   ?/?              0B\n"
                            "  pid 7 llama-server ?  tiny\n";

static char *table_of(const char *json, int *rc)
{
    json_t *j = parse_json(json);
    char *s = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&s, &n);
    *rc = cli_gpus_table(j, f);
    fclose(f);
    json_decref(j);
    return s;
}

static void test_table(void **state)
{
    int rc;
    char *s = table_of(answer, &rc);
    assert_int_equal(rc, 0);
    assert_string_equal(s, table);
    free(s);
    s = table_of("{\"source\":\"none\",\"gpus\":[]}", &rc);
    assert_int_equal(rc, 0);
    assert_string_equal(s, "no GPUs found (source: none)\n");
    free(s);
    s = table_of("[1,2]", &rc);
    assert_int_equal(rc, -EINVAL);
    assert_string_equal(s, "");
    free(s);
}

/* A daemon that answers one request with line; the request goes to DIR/request. */
static pid_t fake_daemon(const char *dir, const char *line)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/yard.sock", dir);
    int lfd = socket(AF_UNIX, SOCK_STREAM, 0);
    assert_true(lfd >= 0);
    assert_int_equal(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(lfd, 4), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid > 0) {
        close(lfd);
        return pid;
    }
    int fd = accept(lfd, NULL, NULL);
    char req[4096];
    size_t n = 0;
    while (fd >= 0 && n < sizeof(req) - 1) {
        ssize_t r = read(fd, req + n, 1);
        if (r <= 0 || req[n] == '\n')
            break;
        n++;
    }
    req[n] = '\0';
    char *path = xstrfmt("%s/request", dir);
    FILE *f = fopen(path, "w");
    free(path);
    if (f) {
        fputs(req, f);
        fclose(f);
    }
    if (fd >= 0 && write(fd, line, strlen(line)) < 0)
        _exit(1);
    _exit(0);
}

/* Runs `yard gpus ARGS` against dir's socket; returns stdout (caller frees). */
static char *run_gpus(const char *dir, char **argv, int argc, int *rc)
{
    struct app app = {0};
    char *state = xstrfmt("--state-dir=%s", dir);
    char **av = xcalloc((size_t)argc + 3, sizeof(*av));
    av[0] = "gpus";
    for (int i = 0; i < argc; i++)
        av[i + 1] = argv[i];
    av[argc + 1] = state;
    char tmpl[] = "/tmp/yard-test-gpu-out-XXXXXX";
    int ofd = mkstemp(tmpl);
    assert_true(ofd >= 0);
    unlink(tmpl);
    fflush(stdout);
    int so = dup(1);
    dup2(ofd, 1);
    *rc = cmd_gpus(argc + 2, av, &app);
    fflush(stdout);
    dup2(so, 1);
    close(so);
    char *out = xcalloc(1, 65536);
    lseek(ofd, 0, SEEK_SET);
    ssize_t n = read(ofd, out, 65535);
    out[n > 0 ? n : 0] = '\0';
    close(ofd);
    free(av);
    free(state);
    free(app.state_dir);
    free(app.config_path);
    return out;
}

static void test_cmd_gpus(void **state)
{
    char *dir = make_tmpdir();
    char *line = xstrfmt("{\"ok\":true,\"result\":%s}\n", answer);
    char *sock = xstrfmt("%s/yard.sock", dir);
    char *reqpath = xstrfmt("%s/request", dir);
    int rc;

    pid_t d = fake_daemon(dir, line);
    char *out = run_gpus(dir, NULL, 0, &rc);
    assert_int_equal(rc, 0);
    assert_string_equal(out, table);
    free(out);
    assert_int_equal(waitpid(d, NULL, 0), d);
    FILE *f = fopen(reqpath, "r");
    assert_non_null(f);
    char req[256] = {0};
    assert_non_null(fgets(req, sizeof(req), f));
    fclose(f);
    json_t *rj = parse_json(req);
    assert_string_equal(json_string_value(json_object_get(rj, "cmd")), "gpus");
    json_decref(rj);
    unlink(sock);

    /* --json prints the result as the daemon gave it. */
    d = fake_daemon(dir, line);
    char *json_flag[] = {"--json"};
    out = run_gpus(dir, json_flag, 1, &rc);
    assert_int_equal(rc, 0);
    json_t *got = parse_json(out), *want = parse_json(answer);
    assert_true(json_equal(got, want));
    json_decref(got);
    json_decref(want);
    free(out);
    assert_int_equal(waitpid(d, NULL, 0), d);
    unlink(sock);

    /* An answer from another version. */
    d = fake_daemon(dir, "{\"ok\":true,\"result\":[1]}\n");
    out = run_gpus(dir, NULL, 0, &rc);
    assert_int_equal(rc, 1);
    free(out);
    assert_int_equal(waitpid(d, NULL, 0), d);
    unlink(sock);

    /* Usage errors and no daemon. */
    char *extra[] = {"x"};
    out = run_gpus(dir, extra, 1, &rc);
    assert_int_equal(rc, 2);
    free(out);
    out = run_gpus(dir, NULL, 0, &rc);
    assert_int_equal(rc, 1);
    free(out);

    unlink(reqpath);
    free(reqpath);
    free(sock);
    free(line);
    remove_tree(dir);
    free(dir);
}

/* A pod's record keeps its GPUs as JSON text: what is written reads back the same. */
static void test_record_roundtrip(void **state)
{
    (void)state;
    struct gpu_dev devs[2] = {
        {.index = 0, .name = "NVIDIA H100 80GB HBM3", .total = 85520809984ull, .used = 1048576},
        {.index = 3, .name = "NVIDIA \"odd\" name", .total = 0, .used = UINT64_MAX},
    };
    struct gpu_inventory inv = {.devs = devs, .n = 2}, back;
    json_t *arr = gpu_record_json(&inv);
    char *text = json_dumps(arr, JSON_COMPACT);
    json_decref(arr);
    assert_string_equal(text,
                        "[{\"index\":0,\"name\":\"NVIDIA H100 80GB HBM3\",\"memory_total\":"
                        "85520809984,\"memory_used\":1048576},{\"index\":3,\"name\":"
                        "\"NVIDIA \\\"odd\\\" name\",\"memory_total\":null,\"memory_used\":null}]");
    assert_int_equal(gpu_record_parse(text, &back), 0);
    free(text);
    assert_int_equal(back.n, 2);
    assert_int_equal(back.devs[0].index, 0);
    assert_string_equal(back.devs[0].name, "NVIDIA H100 80GB HBM3");
    assert_true(back.devs[0].total == 85520809984ull && back.devs[0].used == 1048576);
    assert_true(back.devs[0].free == 85520809984ull - 1048576);
    assert_int_equal(back.devs[1].index, 3);
    assert_true(back.devs[1].total == 0 && back.devs[1].used == UINT64_MAX);
    gpu_inventory_release(&back);
    /* Not an array, or not JSON: refused, nothing held. */
    assert_int_equal(gpu_record_parse("{}", &back), -EINVAL);
    assert_int_equal(back.n, 0);
    assert_int_equal(gpu_record_parse("[{", &back), -EINVAL);
    assert_int_equal(gpu_record_parse(NULL, &back), -EINVAL);
}

int main(void)
{
    /* Children this test forks and kills must not be held as zombies by a SIG_IGN. */
    signal(SIGCHLD, SIG_DFL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_smi_gpus), cmocka_unit_test(test_parse_smi_apps),
        cmocka_unit_test(test_parse_ledger),   cmocka_unit_test(test_pid_alive),
        cmocka_unit_test(test_declared_read),  cmocka_unit_test(test_pid_owned_by),
        cmocka_unit_test(test_run_capture),    cmocka_unit_test(test_smi_standin),
        cmocka_unit_test(test_no_source),      cmocka_unit_test(test_nvml_fake),
        cmocka_unit_test(test_proc_name),      cmocka_unit_test(test_table),
        cmocka_unit_test(test_cmd_gpus),       cmocka_unit_test(test_record_roundtrip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
