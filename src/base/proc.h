#ifndef YARD_BASE_PROC_H
#define YARD_BASE_PROC_H

/*
 * One process as /proc/PID/stat shows it. The command name (field 2) is in
 * parentheses and may hold spaces and ')', so the fields are read after the
 * last ')'.
 */
struct proc_stat {
    char state; /* R, S, D, T, Z, X ... */
    int ppid;
    int pgrp;
    int sid;
    unsigned flags;           /* the kernel's PF_* flags */
    unsigned long long start; /* field 22: clock ticks after boot when it started */
};

/* Parses the text of a /proc/PID/stat file. 0, or -EINVAL when it is not one. */
int proc_stat_parse(const char *text, struct proc_stat *out);
/* Reads /proc/PID/stat. 0, or a negative errno (-ENOENT: no such process). */
int proc_stat_read(int pid, struct proc_stat *out);
/*
 * 1 when pid is a live process (kill(pid, 0) succeeds or says EPERM) and not
 * a zombie; 0 otherwise.
 */
int proc_alive(int pid);
/*
 * 1 when pid is gone, a zombie, or on its way out (the kernel set PF_EXITING:
 * it closes its files, sockets included, only after); 0 while it runs.
 */
int proc_dying(int pid);

#endif
