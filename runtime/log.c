/*
 * log.c: the log hook (rt_log.h), the default logfmt handler and the
 * helpers every handler shares (quoting, redaction, the line format).
 *
 * Depends on libc only, so programs that stand in for the runtime (the
 * store's unit tests) can compile it in alone.
 */
#include "runtime/rt_log.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

/* The handler and its argument are published together, so a line never
 * reaches one handler with the other's argument. */
typedef struct log_hook {
    rt_log_fn fn;
    void *arg;
} log_hook;

static log_hook hooks[2];
static _Atomic(const log_hook *) cur_hook;   /* NULL: default handler */
static atomic_int hook_gen;
static atomic_int log_level = RT_LOG_INFO;

void rt_log_set_handler(rt_log_fn fn, void *arg)
{
    if (fn == NULL) {
        atomic_store_explicit(&cur_hook, NULL, memory_order_release);
        return;
    }
    /* Two slots used in turn: a line that loaded the previous hook still
     * reads a consistent pair unless two installs race it, which the
     * contract (install before the threads that log) rules out. */
    int g = atomic_fetch_add_explicit(&hook_gen, 1, memory_order_relaxed) & 1;
    hooks[g].fn = fn;
    hooks[g].arg = arg;
    atomic_store_explicit(&cur_hook, &hooks[g], memory_order_release);
}

void rt_log_set_level(int level)
{
    if (level >= RT_LOG_DEBUG && level <= RT_LOG_ERROR)
        atomic_store_explicit(&log_level, level, memory_order_relaxed);
}

int rt_log_get_level(void)
{
    return atomic_load_explicit(&log_level, memory_order_relaxed);
}

int rt_log_enabled(int level)
{
    return level >= atomic_load_explicit(&log_level, memory_order_relaxed);
}

const char *rt_log_level_name(int level)
{
    switch (level) {
    case RT_LOG_DEBUG: return "debug";
    case RT_LOG_INFO: return "info";
    case RT_LOG_WARN: return "warn";
    case RT_LOG_ERROR: return "error";
    default: return "?";
    }
}

/* ------------------------------------------------------------------------ */
/* Formatting                                                                */

/* Appends s quoted for logfmt at buf[len], never writing past cap - 1 and
 * always closing the quote. Returns the new length. */
static size_t put_quoted(char *buf, size_t len, size_t cap, const char *s)
{
    if (len + 2 > cap - 1)
        return len;
    buf[len++] = '"';
    size_t end = strlen(s);
    while (end > 0 && (unsigned char)s[end - 1] <= ' ')
        end--;                       /* libpq's texts end in newlines */
    for (size_t i = 0; i < end && len + 3 < cap - 1; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            buf[len++] = '\\';
            buf[len++] = (char)c;
        } else {
            buf[len++] = c < 0x20 || c == 0x7f ? ' ' : (char)c;
        }
    }
    buf[len++] = '"';
    return len;
}

const char *rt_log_q(char *buf, size_t cap, const char *s)
{
    if (cap == 0)
        return buf;
    size_t n = cap >= 3 ? put_quoted(buf, 0, cap, s ? s : "") : 0;
    buf[n] = '\0';
    return buf;
}

/* Appends n bytes of p at out[*o], cut at cap - 1. */
static void put(char *out, size_t *o, size_t cap, const char *p, size_t n)
{
    if (n > cap - 1 - *o)
        n = cap - 1 - *o;
    memcpy(out + *o, p, n);
    *o += n;
}

size_t rt_log_redact(const char *in, char *out, size_t cap)
{
    static const char red[] = "<redacted>";
    static const char pw[] = "password=";
    size_t o = 0;
    if (cap == 0)
        return 0;
    const char *p = in;     /* copied up to here */
    const char *s = in;     /* scanning here */
    while (*s != '\0' && o < cap - 1) {
        if (s[0] == ':' && s[1] == '/' && s[2] == '/') {
            /* The authority runs to the first '/', '?', '#', quote or
             * space; its user info ends at the last '@' (an unencoded '@'
             * in a password stays hidden), the password after the first
             * ':' of the user info. */
            const char *auth = s + 3;
            size_t alen = strcspn(auth, "/?#\"' \t\n\\");
            const char *at = NULL;
            for (size_t i = 0; i < alen; i++)
                if (auth[i] == '@')
                    at = auth + i;
            const char *colon = at ? memchr(auth, ':', (size_t)(at - auth)) : NULL;
            if (colon != NULL) {
                put(out, &o, cap, p, (size_t)(colon + 1 - p));
                put(out, &o, cap, red, sizeof red - 1);
                p = s = at;
                continue;
            }
            s = auth;
            continue;
        }
        if ((*s == 'p' || *s == 'P') && strncasecmp(s, pw, sizeof pw - 1) == 0) {
            const char *v = s + sizeof pw - 1;
            put(out, &o, cap, p, (size_t)(v - p));
            const char *e = v;
            if (*e == '\'' || *e == '"') {
                /* 'libpq quoting' or a "logfmt quoted value": the secret is
                 * inside, the quotes stay; backslash escapes. */
                char quote = *e;
                put(out, &o, cap, e, 1);
                v = ++e;
                for (; *e != '\0' && *e != quote; e++)
                    if (*e == '\\' && e[1] != '\0')
                        e++;
                if (e > v && !(e - v == (long)(sizeof red - 1) && memcmp(v, red, sizeof red - 1) == 0))
                    put(out, &o, cap, red, sizeof red - 1);
                else
                    put(out, &o, cap, v, (size_t)(e - v));
                p = s = e;           /* the closing quote is copied later */
                continue;
            } else {
                /* To a space, '&' or an unescaped '"' (the end of a
                 * quoted logfmt value); "\x" pairs are part of it. */
                while (*e != '\0' && *e != ' ' && *e != '\t' && *e != '\n' && *e != '&' &&
                       *e != '"') {
                    if (*e == '\\' && e[1] != '\0') {
                        if (e[1] == '"' && (e[2] == '\0' || e[2] == ' '))
                            break;   /* \" closing a quoted quote-escaped value */
                        e++;
                    }
                    e++;
                }
            }
            if (e > v && !(e - v == (long)(sizeof red - 1) && memcmp(v, red, sizeof red - 1) == 0))
                put(out, &o, cap, red, sizeof red - 1);
            else
                put(out, &o, cap, v, (size_t)(e - v));
            p = s = e;
            continue;
        }
        s++;
    }
    put(out, &o, cap, p, strlen(p));
    out[o] = '\0';
    return o;
}

/* Nonzero when s may hold a secret rt_log_redact would hide. */
static int may_hold_secret(const char *s)
{
    if (strstr(s, "://") != NULL)
        return 1;
    for (const char *p = s; (p = strpbrk(p, "pP")) != NULL; p++)
        if (strncasecmp(p, "password=", 9) == 0)
            return 1;
    return 0;
}

size_t rt_log_format_line(char *out, size_t cap, int level, const char *module,
                          const char *msg, const char *reqid, const char *kv)
{
    /* Built in place (this runs on request coroutines: no second line
     * buffer); the message and the pairs are redacted on the way in. */
    size_t lcap = cap - 1;           /* room for the '\n' */
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(out, lcap, "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=%s msg=",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, ts.tv_nsec / 1000000, rt_log_level_name(level));
    size_t len = n < 0 ? 0 : (size_t)n < lcap ? (size_t)n : lcap - 1;
    if (msg == NULL)
        msg = "";
    char red[512];
    if (may_hold_secret(msg)) {
        rt_log_redact(msg, red, sizeof red);
        msg = red;
    }
    len = put_quoted(out, len, lcap, msg);
    if (module != NULL && module[0] != '\0' && len + 9 + strlen(module) < lcap) {
        memcpy(out + len, " module=", 8);
        len += 8;
        size_t ml = strlen(module);
        memcpy(out + len, module, ml);
        len += ml;
    }
    if (reqid != NULL && reqid[0] != '\0') {
        /* A client's X-Request-Id is any printable ASCII: quoted when it
         * holds a byte that would end or confuse an unquoted value. */
        size_t rl = strnlen(reqid, 128);
        if (len + 5 + 2 * rl + 2 < lcap) {
            memcpy(out + len, " req=", 5);
            len += 5;
            if (strcspn(reqid, "\"=\\ ") < rl) {
                len = put_quoted(out, len, lcap, reqid);
            } else {
                memcpy(out + len, reqid, rl);
                len += rl;
            }
        }
    }
    if (kv != NULL && kv[0] != '\0' && len + 2 < lcap) {
        out[len++] = ' ';
        len += rt_log_redact(kv, out + len, lcap - len);
    }
    out[len++] = '\n';
    out[len] = '\0';
    return len;
}

/* ------------------------------------------------------------------------ */
/* Logging                                                                   */

static void default_handler(int level, const char *module, const char *msg, const char *kv)
{
    char out[2048];
    size_t n = rt_log_format_line(out, sizeof out, level, module, msg, NULL, kv);
    ssize_t w = write(2, out, n);
    (void)w;
}

void rt_vlog(int level, const char *module, const char *msg, const char *fmt, va_list ap)
{
    if (!rt_log_enabled(level))
        return;
    char kv[1024];
    kv[0] = '\0';
    if (fmt != NULL && fmt[0] != '\0') {
        int n = vsnprintf(kv, sizeof kv, fmt, ap);
        if (n < 0)
            kv[0] = '\0';
    }
    const log_hook *h = atomic_load_explicit(&cur_hook, memory_order_acquire);
    if (module == NULL)
        module = "";
    if (msg == NULL)
        msg = "";
    if (h != NULL)
        h->fn(h->arg, level, module, msg, kv);
    else
        default_handler(level, module, msg, kv);
}

void rt_log(int level, const char *module, const char *msg, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    rt_vlog(level, module, msg, fmt, ap);
    va_end(ap);
}
