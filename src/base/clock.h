#ifndef YARD_BASE_CLOCK_H
#define YARD_BASE_CLOCK_H

#include <stdint.h>

/* Monotonic time in milliseconds and nanoseconds (CLOCK_MONOTONIC). */
uint64_t clock_mono_ms(void);
uint64_t clock_mono_ns(void);
/* Wall-clock time in milliseconds since the epoch. */
int64_t clock_wall_ms(void);

#endif
