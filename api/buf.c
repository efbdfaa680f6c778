/*
 * buf.c: number and JSON string formatting into a kit_buf, the error
 * table and the constant-time compare.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/http_int.h"

/* Two digits per division: a response formats five or six numbers. */
static const char digits2[] =
    "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
    "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
    "8081828384858687888990919293949596979899";

size_t http__fmt_i64(char *dst, int64_t v)
{
    char tmp[24];
    char *t = tmp + sizeof tmp;
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    while (u >= 100) {
        unsigned d = (unsigned)(u % 100) * 2;
        u /= 100;
        *--t = digits2[d + 1];
        *--t = digits2[d];
    }
    if (u >= 10) {
        *--t = digits2[u * 2 + 1];
        *--t = digits2[u * 2];
    } else {
        *--t = (char)('0' + u);
    }
    size_t o = 0;
    if (v < 0)
        dst[o++] = '-';
    size_t n = (size_t)(tmp + sizeof tmp - t);
    memcpy(dst + o, t, n);
    return o + n;
}

size_t http__fmt_u64_hex(char *dst, uint64_t v)
{
    static const char hex[] = "0123456789abcdef";
    char tmp[16];
    size_t n = 0;
    do {
        tmp[n++] = hex[v & 15];
        v >>= 4;
    } while (v);
    size_t o = 0;
    while (n)
        dst[o++] = tmp[--n];
    return o;
}

int http_buf_i64(kit_buf *b, int64_t v)
{
    if (kit_buf_reserve(b, 24) < 0)
        return -ENOMEM;
    b->len += http__fmt_i64(b->data + b->len, v);
    return 0;
}

int http_buf_json_str(kit_buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    /* Worst case every byte becomes \u00XX. */
    if (kit_buf_reserve(b, n * 6 + 2) < 0)
        return -ENOMEM;
    char *o = b->data + b->len;
    *o++ = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\') {
            *o++ = '\\';
            *o++ = (char)ch;
        } else if (ch < 0x20 || ch == 0x7f) {
            *o++ = '\\';
            *o++ = 'u';
            *o++ = '0';
            *o++ = '0';
            *o++ = hex[ch >> 4];
            *o++ = hex[ch & 15];
        } else {
            *o++ = (char)ch;
        }
    }
    *o++ = '"';
    b->len = (size_t)(o - b->data);
    return 0;
}

/* ------------------------------------------------------------------------ */

#define HTTP__ERRORS(X)                                                      \
    X(HTTP_E_BAD_REQUEST, 400, "bad_request", "bad request")                 \
    X(HTTP_E_NOT_FOUND, 404, "not_found", "not found")                       \
    X(HTTP_E_SOLD_OUT, 409, "sold_out", "the item is sold out")              \
    X(HTTP_E_INSUFFICIENT_STOCK, 409, "insufficient_stock",                  \
      "not enough stock for the requested quantity")                         \
    X(HTTP_E_LIMIT_EXCEEDED, 409, "limit_exceeded",                          \
      "the per-user limit would be exceeded")                                \
    X(HTTP_E_SALE_NOT_STARTED, 425, "sale_not_started",                      \
      "the sale has not started yet")                                        \
    X(HTTP_E_OVERLOADED, 429, "overloaded",                                  \
      "the item's queue is full; retry later")                               \
    X(HTTP_E_UNAVAILABLE, 503, "unavailable",                                \
      "a dependency is down or timed out; nothing was applied")              \
    X(HTTP_E_OUTCOME_UNKNOWN, 503, "outcome_unknown",                        \
      "the outcome is unknown; retry with the same Idempotency-Key")         \
    X(HTTP_E_CONFLICT, 409, "conflict", "conflict")                          \
    X(HTTP_E_KEY_MISMATCH, 422, "idempotency_key_mismatch",                  \
      "this Idempotency-Key was first sent with another request (sku, "      \
      "user_id or qty); nothing was applied")

const char *http_strerror(int err)
{
    switch (err) {
#define X(e, st, code, text) case e: return text;
        HTTP__ERRORS(X)
#undef X
    case 0:
        return "success";
    default:
        return err < 0 ? strerror(-err) : "unknown error";
    }
}

int http_error_status(int err)
{
    switch (err) {
#define X(e, st, code, text) case e: return st;
        HTTP__ERRORS(X)
#undef X
    case -ETIMEDOUT: case -ECONNREFUSED: case -ECONNRESET: case -EPIPE:
    case -ENOMEM: case -EAGAIN: case -ECANCELED: case -EHOSTUNREACH:
        return 503;
    default:
        return 500;
    }
}

const char *http_error_code(int err)
{
    switch (err) {
#define X(e, st, code, text) case e: return code;
        HTTP__ERRORS(X)
#undef X
    default:
        return http_error_status(err) == 503 ? "unavailable" : "internal";
    }
}

int http_consttime_eq(const void *a, size_t alen, const void *b, size_t blen)
{
    const volatile unsigned char *x = a, *y = b;
    /* Walk the expected string's length whatever the candidate is, so the
     * time does not depend on where a mismatch is. */
    size_t diff = alen ^ blen;
    for (size_t i = 0; i < blen; i++) {
        unsigned char cx = i < alen ? x[i] : 0;
        diff |= (size_t)(cx ^ y[i]);
    }
    return diff == 0;
}
