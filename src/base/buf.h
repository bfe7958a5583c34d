#ifndef YARD_BASE_BUF_H
#define YARD_BASE_BUF_H

#include <stdarg.h>
#include <stddef.h>

/*
 * A growable byte buffer with a hard maximum, taken at init (curl's dynbuf).
 * Appends past the maximum fail with -ENOBUFS and leave the buffer as it was;
 * an allocation failure gives -ENOMEM. data is always NUL-terminated when
 * non-NULL, so text can be read as a C string.
 */
struct buf {
    char *data;
    size_t len;
    size_t cap;
    size_t max;
};

void buf_init(struct buf *b, size_t max);
/* Sets the maximum of a buffer in use (what it holds stays; appends past max fail). */
void buf_set_max(struct buf *b, size_t max);
void buf_release(struct buf *b);
void buf_reset(struct buf *b);
/*
 * Makes room for extra more bytes and the NUL after them, so they can be
 * written at data + len (then len set by the caller). Returns 0, -ENOBUFS
 * (past the maximum) or -ENOMEM; the buffer is unchanged on failure.
 */
int buf_reserve(struct buf *b, size_t extra);
int buf_append(struct buf *b, const void *p, size_t n);
int buf_appends(struct buf *b, const char *s);
int buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Removes the first n bytes. */
void buf_consume(struct buf *b, size_t n);
/* Hands the data to the caller (who frees it) and resets the buffer. */
char *buf_detach(struct buf *b, size_t *len);
/*
 * The whole file at path as a new NUL-terminated string, *len its length
 * (NULL: not wanted). NULL with errno set when it cannot be opened or read
 * (EIO for a read error) or holds more than max bytes (EFBIG): never a
 * silently cut file.
 */
char *buf_read_file(const char *path, size_t max, size_t *len);

#endif
