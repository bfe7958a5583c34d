#ifndef YARD_BASE_NOTIFY_H
#define YARD_BASE_NOTIFY_H

#include <stdint.h>

#include <uv.h>

/*
 * The service manager's notify protocol (systemd's Type=notify, through
 * libsystemd's sd_notify): READY=1 once the daemon serves, RELOADING=1 and
 * READY=1 around a reload, STOPPING=1 at shutdown, STATUS= lines, and
 * WATCHDOG=1 pings when the manager asks for them. Outside such a manager
 * (no NOTIFY_SOCKET) every call does nothing. Nothing else in yard knows the
 * protocol. The calls below take NULL for "no manager" too. See
 * docs/service.md.
 */
struct notify {
    uv_timer_t watchdog;    /* pings at half the manager's interval; unref'd */
    uint64_t watchdog_usec; /* WATCHDOG_USEC when it names this process, else 0 */
    int on;                 /* NOTIFY_SOCKET is set */
    int timer_open;         /* watchdog initialised and not yet closed */
    int failed;             /* a send failed once: logged once */
};

/*
 * Reads NOTIFY_SOCKET, and WATCHDOG_USEC with WATCHDOG_PID (pings only when
 * that pid is this process, or none is given), and starts the watchdog timer
 * on loop. The timer never keeps the loop running; notify_release closes it.
 */
void notify_init(struct notify *n, uv_loop_t *loop);
/* Frees what n holds: closes the watchdog timer (it must not run after the loop ends). */
void notify_release(struct notify *n);

/* READY=1 with STATUS=status: the daemon serves (after start, and after a reload). */
void notify_ready(struct notify *n, const char *status);
/* RELOADING=1 and MONOTONIC_USEC=now with STATUS=status: a reload begins. */
void notify_reloading(struct notify *n, const char *status);
/* STOPPING=1 with STATUS=status; the watchdog stops too (a stopping unit is not watched). */
void notify_stopping(struct notify *n, const char *status);
/* STATUS=status alone: one line for `systemctl status`. */
void notify_status(struct notify *n, const char *status);

#endif
