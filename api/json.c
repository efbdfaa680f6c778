/*
 * json.c: the request-body reader. Every body this API accepts is one flat
 * JSON object whose members are strings, numbers, true, false or null, so
 * the reader is a loop, not a recursive descent: its stack use is the same
 * for every input (see docs/runtime.md, "Stack budget"), and a body that
 * nests is refused at its first '{' or '[' inside the object.
 *
 * It is strict where a lax parser would silently rewrite input: RFC 8259
 * syntax exactly (no trailing commas, no single quotes, no leading zeros),
 * nothing but whitespace after the object, no duplicate member names (after
 * unescaping), no raw control bytes and no \u0000 in strings, well-formed
 * UTF-8 with paired surrogates. Strings are unescaped in place: an escape
 * is never shorter than what it stands for, so the writer never passes the
 * reader, and the members point into the caller's buffer.
 */
#include <string.h>

#include "api/http_int.h"

typedef struct reader {
    char *p, *end;
    char *start;
    const char *err;
} reader;

static int fail(reader *r, const char *why)
{
    if (r->err == NULL)
        r->err = why;
    return -1;
}

static void skip_ws(reader *r)
{
    while (r->p < r->end &&
           (*r->p == ' ' || *r->p == '\t' || *r->p == '\n' || *r->p == '\r'))
        r->p++;
}

static int hex4(const char *s, unsigned *out)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char ch = s[i];
        v <<= 4;
        if (ch >= '0' && ch <= '9')
            v |= (unsigned)(ch - '0');
        else if (ch >= 'a' && ch <= 'f')
            v |= (unsigned)(ch - 'a' + 10);
        else if (ch >= 'A' && ch <= 'F')
            v |= (unsigned)(ch - 'A' + 10);
        else
            return -1;
    }
    *out = v;
    return 0;
}

static char *put_utf8(char *o, unsigned cp)
{
    if (cp < 0x80) {
        *o++ = (char)cp;
    } else if (cp < 0x800) {
        *o++ = (char)(0xc0 | (cp >> 6));
        *o++ = (char)(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
        *o++ = (char)(0xe0 | (cp >> 12));
        *o++ = (char)(0x80 | ((cp >> 6) & 0x3f));
        *o++ = (char)(0x80 | (cp & 0x3f));
    } else {
        *o++ = (char)(0xf0 | (cp >> 18));
        *o++ = (char)(0x80 | ((cp >> 12) & 0x3f));
        *o++ = (char)(0x80 | ((cp >> 6) & 0x3f));
        *o++ = (char)(0x80 | (cp & 0x3f));
    }
    return o;
}

/* The length of the well-formed UTF-8 sequence at s (RFC 3629: no overlong
 * forms, no surrogates, nothing above U+10FFFF), or 0. */
static size_t utf8_len(const unsigned char *s, const unsigned char *end)
{
    unsigned c = s[0];
    size_t n;
    unsigned lo = 0x80, hi = 0xbf;
    if (c >= 0xc2 && c <= 0xdf)
        n = 2;
    else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        if (c == 0xe0) lo = 0xa0;
        if (c == 0xed) hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        if (c == 0xf0) lo = 0x90;
        if (c == 0xf4) hi = 0x8f;
    } else
        return 0;
    if ((size_t)(end - s) < n || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++)
        if (s[i] < 0x80 || s[i] > 0xbf)
            return 0;
    return n;
}

/* Reads the string at r->p (its opening quote), unescaping it in place.
 * Sets *out and *len to the unescaped bytes (not NUL-terminated). */
static int read_string(reader *r, const char **out, size_t *len)
{
    char *o = ++r->p;   /* past the quote */
    *out = o;
    while (r->p < r->end) {
        unsigned char ch = (unsigned char)*r->p;
        if (ch == '"') {
            *len = (size_t)(o - *out);
            r->p++;
            return 0;
        }
        if (ch < 0x20)
            return fail(r, "a control character inside a string");
        if (ch >= 0x80) {
            size_t n = utf8_len((const unsigned char *)r->p, (const unsigned char *)r->end);
            if (n == 0)
                return fail(r, "invalid UTF-8 inside a string");
            memmove(o, r->p, n);
            o += n;
            r->p += n;
            continue;
        }
        if (ch != '\\') {
            *o++ = (char)ch;
            r->p++;
            continue;
        }
        if (r->end - r->p < 2)
            break;
        char e = r->p[1];
        r->p += 2;
        switch (e) {
        case '"': *o++ = '"'; break;
        case '\\': *o++ = '\\'; break;
        case '/': *o++ = '/'; break;
        case 'b': *o++ = '\b'; break;
        case 'f': *o++ = '\f'; break;
        case 'n': *o++ = '\n'; break;
        case 'r': *o++ = '\r'; break;
        case 't': *o++ = '\t'; break;
        case 'u': {
            unsigned cp, lo;
            if (r->end - r->p < 4 || hex4(r->p, &cp) < 0)
                return fail(r, "a \\u escape needs four hex digits");
            r->p += 4;
            if (cp == 0)
                return fail(r, "\\u0000 is not allowed inside a string");
            if (cp >= 0xdc00 && cp <= 0xdfff)
                return fail(r, "an unpaired UTF-16 surrogate");
            if (cp >= 0xd800 && cp <= 0xdbff) {
                if (r->end - r->p < 6 || r->p[0] != '\\' || r->p[1] != 'u' ||
                    hex4(r->p + 2, &lo) < 0 || lo < 0xdc00 || lo > 0xdfff)
                    return fail(r, "an unpaired UTF-16 surrogate");
                r->p += 6;
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            }
            o = put_utf8(o, cp);
            break;
        }
        default:
            return fail(r, "an invalid escape inside a string");
        }
    }
    return fail(r, "an unterminated string");
}

/* Skips one or more digits (a fraction's or an exponent's). */
static int skip_digits(reader *r)
{
    if (r->p == r->end || *r->p < '0' || *r->p > '9')
        return fail(r, "an invalid number");
    while (r->p < r->end && *r->p >= '0' && *r->p <= '9')
        r->p++;
    return 0;
}

/* Reads a number (RFC 8259 grammar). An integer literal that fits int64_t
 * sets m->int_ok and m->i; any other number is valid JSON but not an
 * integer. */
static int read_number(reader *r, http__jmember *m)
{
    const char *s = r->p;
    int neg = 0;
    if (r->p < r->end && *r->p == '-') {
        neg = 1;
        r->p++;
    }
    if (r->p == r->end || *r->p < '0' || *r->p > '9')
        return fail(r, "an invalid number");
    uint64_t v = 0;
    int overflow = 0;
    if (*r->p == '0') {
        r->p++;
        if (r->p < r->end && *r->p >= '0' && *r->p <= '9')
            return fail(r, "a number with a leading zero");
    } else {
        while (r->p < r->end && *r->p >= '0' && *r->p <= '9') {
            unsigned d = (unsigned)(*r->p++ - '0');
            if (v > (UINT64_C(9223372036854775808) - d) / 10)
                overflow = 1;
            else
                v = v * 10 + d;
        }
    }
    int integral = 1;
    if (r->p < r->end && *r->p == '.') {
        integral = 0;
        r->p++;
        if (skip_digits(r) < 0)
            return -1;
    }
    if (r->p < r->end && (*r->p == 'e' || *r->p == 'E')) {
        integral = 0;
        r->p++;
        if (r->p < r->end && (*r->p == '+' || *r->p == '-'))
            r->p++;
        if (skip_digits(r) < 0)
            return -1;
    }
    m->type = HTTP__J_NUMBER;
    m->str = s;
    m->str_len = (size_t)(r->p - s);
    m->int_ok = integral && !overflow && (neg || v <= INT64_MAX);
    if (m->int_ok)
        m->i = neg ? (int64_t)(0 - v) : (int64_t)v;
    return 0;
}

static int read_literal(reader *r, const char *lit, int type, http__jmember *m)
{
    size_t n = strlen(lit);
    if ((size_t)(r->end - r->p) < n || memcmp(r->p, lit, n) != 0)
        return fail(r, "an invalid value");
    r->p += n;
    m->type = type;
    return 0;
}

static int read_value(reader *r, http__jmember *m)
{
    if (r->p == r->end)
        return fail(r, "a member without a value");
    switch (*r->p) {
    case '"':
        m->type = HTTP__J_STRING;
        return read_string(r, &m->str, &m->str_len);
    case '{':
    case '[':
        return fail(r, "nested objects and arrays are not accepted (the body is one flat object)");
    case 't': return read_literal(r, "true", HTTP__J_TRUE, m);
    case 'f': return read_literal(r, "false", HTTP__J_FALSE, m);
    case 'n': return read_literal(r, "null", HTTP__J_NULL, m);
    default:  return read_number(r, m);
    }
}

int http__json_object(char *buf, size_t len, http__jobj *o)
{
    reader r = {buf, buf + len, buf, NULL};
    o->n = 0;
    o->err = NULL;
    o->err_at = 0;
    skip_ws(&r);
    if (r.p == r.end || *r.p != '{') {
        fail(&r, "the body must be a JSON object");
        goto out;
    }
    r.p++;
    skip_ws(&r);
    if (r.p < r.end && *r.p == '}') {
        r.p++;
        goto done;
    }
    for (;;) {
        skip_ws(&r);
        if (r.p == r.end || *r.p != '"') {
            fail(&r, "a member name must be a string");
            goto out;
        }
        if (o->n == HTTP__JSON_MAX_MEMBERS) {
            fail(&r, "too many members");
            goto out;
        }
        http__jmember *m = &o->m[o->n];
        memset(m, 0, sizeof *m);
        if (read_string(&r, &m->name, &m->name_len) < 0)
            goto out;
        for (int i = 0; i < o->n; i++)
            if (o->m[i].name_len == m->name_len &&
                memcmp(o->m[i].name, m->name, m->name_len) == 0) {
                fail(&r, "a duplicate member name");
                goto out;
            }
        skip_ws(&r);
        if (r.p == r.end || *r.p != ':') {
            fail(&r, "':' expected after a member name");
            goto out;
        }
        r.p++;
        skip_ws(&r);
        if (read_value(&r, m) < 0)
            goto out;
        o->n++;
        skip_ws(&r);
        if (r.p < r.end && *r.p == ',') {
            r.p++;
            continue;
        }
        if (r.p < r.end && *r.p == '}') {
            r.p++;
            break;
        }
        fail(&r, "',' or '}' expected after a member");
        goto out;
    }
done:
    skip_ws(&r);
    if (r.p != r.end)
        fail(&r, "bytes after the JSON object");
out:
    if (r.err != NULL) {
        o->err = r.err;
        o->err_at = (size_t)(r.p - r.start);
        return -1;
    }
    return 0;
}

const http__jmember *http__json_get(const http__jobj *o, const char *name)
{
    size_t n = strlen(name);
    for (int i = 0; i < o->n; i++)
        if (o->m[i].name_len == n && memcmp(o->m[i].name, name, n) == 0)
            return &o->m[i];
    return NULL;
}
