/*
 * bench/startup_probe: times a server from exec to listening (bench/run
 * section "footprint"; docs/bench.md).
 *
 *   startup_probe --port P [--log FILE] [--timeout-ms 10000] -- PROGRAM ARGS...
 *
 * Takes CLOCK_MONOTONIC, forks, and the child (in its own process group, its
 * stdout and stderr to FILE or /dev/null) execs PROGRAM. The parent tries a
 * TCP connect to 127.0.0.1:P every 100 us until one succeeds. Prints one
 * JSON object on stdout, {"pid":N,"listen_ms":X}, and exits 0, leaving the
 * program running: the caller stops it. Exits 1 (after killing the child's
 * group) if the program exits or the timeout passes first.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static long parse_long(const char *s, const char *flag, long lo, long hi)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "startup_probe: bad value '%s' for %s\n", s, flag);
        exit(2);
    }
    return v;
}

static int try_connect(const struct sockaddr_in *sa)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int rc = connect(fd, (const struct sockaddr *)sa, sizeof *sa) == 0 ? 0 : -errno;
    close(fd);
    return rc;
}

int main(int argc, char **argv)
{
    int port = 0;
    long timeout_ms = 10000;
    const char *log = "/dev/null";
    int i = 1;
    for (; i < argc && strcmp(argv[i], "--") != 0; i++) {
        if (i + 1 >= argc) {
            fprintf(stderr, "startup_probe: option '%s' needs a value\n", argv[i]);
            return 2;
        }
        if (strcmp(argv[i], "--port") == 0)
            port = (int)parse_long(argv[++i], "--port", 1, 65535);
        else if (strcmp(argv[i], "--log") == 0)
            log = argv[++i];
        else if (strcmp(argv[i], "--timeout-ms") == 0)
            timeout_ms = parse_long(argv[++i], "--timeout-ms", 1, 600000);
        else {
            fprintf(stderr, "startup_probe: unknown option '%s'\n", argv[i]);
            return 2;
        }
    }
    if (!port || i + 1 >= argc) {
        fprintf(stderr, "usage: startup_probe --port P [--log FILE] -- PROGRAM ARGS...\n");
        return 2;
    }
    char **prog = &argv[i + 1];

    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    if (try_connect(&sa) == 0) {
        fprintf(stderr, "startup_probe: port %d already accepts connections\n", port);
        return 1;
    }

    int lfd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (lfd < 0) {
        fprintf(stderr, "startup_probe: cannot open '%s': %s\n", log, strerror(errno));
        return 1;
    }
    uint64_t t0 = now_ns();
    pid_t pid = fork();
    if (pid < 0) {
        perror("startup_probe: fork");
        return 1;
    }
    if (pid == 0) {
        setpgid(0, 0);
        dup2(lfd, STDOUT_FILENO);
        dup2(lfd, STDERR_FILENO);
        execvp(prog[0], prog);
        dprintf(lfd, "startup_probe: cannot run '%s': %s\n", prog[0], strerror(errno));
        _exit(127);
    }
    setpgid(pid, pid);
    close(lfd);

    uint64_t deadline = t0 + (uint64_t)timeout_ms * 1000000ull;
    for (;;) {
        if (try_connect(&sa) == 0)
            break;
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) {
            fprintf(stderr, "startup_probe: '%s' exited before listening (status 0x%x)\n", prog[0],
                    status);
            return 1;
        }
        if (now_ns() > deadline) {
            fprintf(stderr, "startup_probe: '%s' not listening on %d after %ld ms\n", prog[0], port,
                    timeout_ms);
            kill(-pid, SIGKILL);
            return 1;
        }
        struct timespec ts = {0, 100000};
        nanosleep(&ts, NULL);
    }
    uint64_t t1 = now_ns();
    printf("{\"pid\":%d,\"listen_ms\":%.3f}\n", (int)pid, (double)(t1 - t0) / 1e6);
    return 0;
}
