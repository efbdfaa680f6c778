/*
 * buf.c: the growable byte buffer.
 */
#include "kit/buf.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int kit_buf_reserve(kit_buf *b, size_t extra)
{
    if (b->data != NULL && b->cap - b->len > extra)
        return 0;
    size_t need = b->len + extra + 1;
    /* No object is larger than PTRDIFF_MAX (and doubling past it would
     * wrap the capacity to 0 and loop forever). */
    if (need < extra || need > PTRDIFF_MAX) {
        b->oom = 1;
        return -ENOMEM;
    }
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap *= 2;
    char *p = realloc(b->data, cap);
    if (p == NULL) {
        b->oom = 1;
        return -ENOMEM;
    }
    b->data = p;
    b->cap = cap;
    return 0;
}

int kit_buf_append(kit_buf *b, const void *p, size_t n)
{
    if (kit_buf_reserve(b, n) < 0)
        return -ENOMEM;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

int kit_buf_puts(kit_buf *b, const char *s)
{
    return kit_buf_append(b, s, strlen(s));
}

int kit_buf_printf(kit_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->oom = 1;   /* the text would have a hole, as after a failed append */
        return -EINVAL;
    }
    if (kit_buf_reserve(b, (size_t)n) < 0)
        return -ENOMEM;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

const char *kit_buf_cstr(kit_buf *b)
{
    if (b->data == NULL || b->oom)
        return "";
    b->data[b->len] = '\0';   /* reserve always leaves room for it */
    return b->data;
}

void kit_buf_reset(kit_buf *b)
{
    b->len = 0;
    b->oom = 0;
}

void kit_buf_free(kit_buf *b)
{
    free(b->data);
    memset(b, 0, sizeof *b);
}
