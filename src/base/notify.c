/*
 * The notify protocol, over libsystemd's sd_notify: each message is one
 * datagram of NAME=VALUE lines to the socket in NOTIFY_SOCKET. sd_notify
 * reads the variable on each call and does nothing without it, which is the
 * "not under a manager" case. The variables stay in the environment, so an
 * engine yard starts inherits them; the manager accepts messages from the
 * main pid only (NotifyAccess=main, the default of Type=notify) and
 * WATCHDOG_PID names yard's pid, so an engine that speaks the protocol
 * neither reports for yard nor thinks it is watched.
 *
 * libsystemd is loaded with dlopen only when NOTIFY_SOCKET is set: a daemon
 * outside a service manager (and every CLI command) never maps it and the
 * libraries it brings (libgcrypt, liblzma, libzstd, liblz4, libcap).
 */
#include "base/notify.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <systemd/sd-daemon.h>

#include "base/alloc.h"
#include "base/log.h"

#define LIBSYSTEMD "libsystemd.so.0"

static struct {
    __typeof__(sd_notify) *notify;
    __typeof__(sd_watchdog_enabled) *watchdog_enabled;
} sd;

/* Loads libsystemd's two calls once; 0, or -1 with why set to one line. */
static int sd_load(char *why, size_t whylen)
{
    if (sd.notify)
        return 0;
    void *lib = dlopen(LIBSYSTEMD, RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        const char *e = dlerror();
        snprintf(why, whylen,
                 "cannot load libsystemd (%s); install it (Debian: apt install "
                 "libsystemd0)",
                 e ? e : LIBSYSTEMD);
        return -1;
    }
    *(void **)&sd.watchdog_enabled = dlsym(lib, "sd_watchdog_enabled");
    *(void **)&sd.notify = dlsym(lib, "sd_notify");
    if (!sd.notify || !sd.watchdog_enabled) {
        snprintf(why, whylen, "the libsystemd at %s has no sd_notify; install libsystemd0",
                 LIBSYSTEMD);
        sd.notify = NULL;
        dlclose(lib);
        return -1;
    }
    return 0;
}

/* A STATUS= value is one line: newlines in it would start other assignments. */
static char *one_line(const char *s)
{
    char *out = xstrdup(s ? s : "");
    for (char *p = out; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
    return out;
}

static void send_msg(struct notify *n, const char *state, const char *status)
{
    if (!n || !n->on)
        return;
    char *st = status ? one_line(status) : NULL;
    char *msg =
        st ? xstrfmt("%s%sSTATUS=%s", state ? state : "", state ? "\n" : "", st) : xstrdup(state);
    int rc = sd.notify(0, msg);
    if (rc < 0 && !n->failed) {
        n->failed = 1;
        log_warn("notify", "cannot tell the service manager '%s': %s (NOTIFY_SOCKET=%s)",
                 state ? state : "STATUS", strerror(-rc), getenv("NOTIFY_SOCKET"));
    }
    free(msg);
    free(st);
}

static void on_watchdog(uv_timer_t *t)
{
    struct notify *n = t->data;
    send_msg(n, "WATCHDOG=1", NULL);
}

static void on_timer_closed(uv_handle_t *h)
{
    (void)h;
}

void notify_init(struct notify *n, uv_loop_t *loop)
{
    memset(n, 0, sizeof *n);
    const char *sock = getenv("NOTIFY_SOCKET");
    n->on = sock && *sock;
    char why[512];
    if (n->on && sd_load(why, sizeof why) < 0) {
        /* The manager waits for READY=1 in vain: say so, once, where its log shows it. */
        log_error("notify", "NOTIFY_SOCKET is set but the service manager cannot be told: %s", why);
        n->on = 0;
        return;
    }
    uint64_t usec = 0;
    /* > 0 only when WATCHDOG_USEC is set and WATCHDOG_PID, if set, is this process. */
    if (!n->on || sd.watchdog_enabled(0, &usec) <= 0 || usec == 0)
        return;
    n->watchdog_usec = usec;
    uint64_t every_ms = usec / 2 / 1000;
    if (every_ms == 0)
        every_ms = 1;
    uv_timer_init(loop, &n->watchdog);
    n->watchdog.data = n;
    n->timer_open = 1;
    uv_timer_start(&n->watchdog, on_watchdog, every_ms, every_ms);
    uv_unref((uv_handle_t *)&n->watchdog);
    log_info("notify", "the service manager watches yard: a ping every %llu ms",
             (unsigned long long)every_ms);
}

static void stop_watchdog(struct notify *n)
{
    if (!n || !n->timer_open)
        return;
    n->timer_open = 0;
    uv_timer_stop(&n->watchdog);
    uv_close((uv_handle_t *)&n->watchdog, on_timer_closed);
}

void notify_release(struct notify *n)
{
    stop_watchdog(n);
}

void notify_ready(struct notify *n, const char *status)
{
    send_msg(n, "READY=1", status);
}

void notify_reloading(struct notify *n, const char *status)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    char state[96];
    /* systemd 253 and later match the reload to this time; older ones ignore it. */
    snprintf(state, sizeof state, "RELOADING=1\nMONOTONIC_USEC=%llu",
             (unsigned long long)ts.tv_sec * 1000000ull + (unsigned long long)ts.tv_nsec / 1000);
    send_msg(n, state, status);
}

void notify_stopping(struct notify *n, const char *status)
{
    send_msg(n, "STOPPING=1", status);
    stop_watchdog(n);
}

void notify_status(struct notify *n, const char *status)
{
    send_msg(n, NULL, status);
}
