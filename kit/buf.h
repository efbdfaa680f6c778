/*
 * buf.h: the growable byte buffer of the whole tree: HTTP responses,
 * Prometheus text, SQL text.
 *
 * Appends return 0 or -ENOMEM; a failed append leaves the buffer as it
 * was and sets oom, which stays set until kit_buf_free or kit_buf_reset,
 * so a writer that appends many pieces may check once at the end
 * (if (b.oom) the text has a hole: discard it). After kit_buf_append,
 * kit_buf_puts and kit_buf_printf the text is NUL-terminated (data[len]),
 * which writers that fill the room themselves do not promise.
 */
#ifndef KIT_BUF_H
#define KIT_BUF_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kit_buf {
    char *data;   /* owned; NULL until the first append */
    size_t len;
    size_t cap;
    int oom;      /* an append failed since the last reset */
} kit_buf;

/* Makes room for extra more bytes (and a terminating NUL). */
int kit_buf_reserve(kit_buf *b, size_t extra);
int kit_buf_append(kit_buf *b, const void *p, size_t n);
int kit_buf_puts(kit_buf *b, const char *s);
int kit_buf_printf(kit_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The text, NUL-terminated ("" when empty or out of memory). */
const char *kit_buf_cstr(kit_buf *b);
/* Empties the buffer, keeping its memory, and clears oom. */
void kit_buf_reset(kit_buf *b);
void kit_buf_free(kit_buf *b);

#ifdef __cplusplus
}
#endif
#endif /* KIT_BUF_H */
