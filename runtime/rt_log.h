/*
 * rt_log.h: one log stream for every module (included by rt.h).
 *
 * The runtime is the layer every module depends on, so the log hook lives
 * here, in the spirit of SQLite's SQLITE_CONFIG_LOG: modules (store, inv,
 * redis, rt, kafka) log through rt_log() with their module name, a short
 * fixed message and key=value pairs; the program decides where lines go by
 * installing one handler. cachesvc installs its logger (cachesvc/log.c),
 * which adds the request id, the level set at run time and the rate limit
 * of repeated lines. Without a handler (unit tests, tools) each line is
 * written to stderr as logfmt with one write(2):
 *
 *   ts=<RFC3339 UTC ms> level=<l> msg="<text>" module=<m> k=v ...
 *
 * Secrets never reach a log line: every line the default handler or
 * rt_log_format_line() builds has the password of a URL's user info
 * (scheme://user:password@host) and the value of any password=... replaced
 * by <redacted> (rt_log_redact).
 *
 * Threads. Every call here is callable from any thread, coroutine or not,
 * including threads the runtime does not know (librdkafka's); none switches
 * coroutines, takes a runtime lock or allocates.
 */
#ifndef CACHESVC_RT_LOG_H
#define CACHESVC_RT_LOG_H

#include <stdarg.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Levels, numbered as cachesvc's (SVC_LOG_*). */
enum {
    RT_LOG_DEBUG = 0,
    RT_LOG_INFO = 1,
    RT_LOG_WARN = 2,
    RT_LOG_ERROR = 3,
};

/* A handler receives one line's parts: module (never NULL, "" for none),
 * msg (never NULL) and kv, the key=value pairs already formatted (never
 * NULL, "" for none), all valid only during the call. It is called from
 * whatever thread logged (workers, the blocking pool, the monitor,
 * librdkafka's threads), concurrently, and must therefore be thread-safe,
 * must never switch coroutines or block for long, and must not call
 * rt_log itself. Lines below the level (rt_log_set_level) never reach it. */
typedef void (*rt_log_fn)(void *arg, int level, const char *module, const char *msg,
                          const char *kv);

/* Installs fn (with arg) as the handler of every later line; NULL restores
 * the default (logfmt to stderr). Install it before the threads that log
 * start, or accept that a line racing the install may go to either; arg
 * must stay valid while fn is installed. */
void rt_log_set_handler(rt_log_fn fn, void *arg);

/* Lines below level are dropped before any formatting. RT_LOG_INFO by
 * default; a level outside RT_LOG_DEBUG..RT_LOG_ERROR is ignored. */
void rt_log_set_level(int level);
int rt_log_get_level(void);

/* Nonzero when a line at level would be logged: a caller whose arguments
 * are costly to build (quoting a long error text) asks first. */
int rt_log_enabled(int level);

/* "debug", "info", "warn", "error" ("?" for anything else). */
const char *rt_log_level_name(int level);

/* Logs msg at level for module (e.g. "store"), with the key=value pairs
 * that fmt (printf-style; NULL or "" for none) produces. msg should be a
 * fixed text (the rate limit of cachesvc's logger counts lines by module
 * and msg), the variable parts go in the pairs. A value that may hold a
 * space, '"' or '=' is passed through rt_log_q(). The pairs are cut at
 * 1 KiB. */
void rt_log(int level, const char *module, const char *msg, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void rt_vlog(int level, const char *module, const char *msg, const char *fmt, va_list ap);

/* Writes s into buf as one logfmt value: quoted, '"' and '\\' escaped,
 * control bytes (newlines of multi-line error texts) as spaces, trailing
 * whitespace dropped; NULL as "". Cut to fit cap (a cut value still ends
 * with its closing quote). Returns buf, for use as a "%s" argument. */
const char *rt_log_q(char *buf, size_t cap, const char *s);

/* Copies in to out (cap bytes, NUL-terminated, cut to fit) with secrets
 * replaced by <redacted>: the password of a URL's user info
 * ("postgresql://u:secret@h/db" -> "postgresql://u:<redacted>@h/db", also
 * "redis://:secret@h" and multi-host URLs) and the value of every
 * password=... (libpq keyword strings, URL parameters, sslpassword=,
 * sasl.password=; a value in single quotes up to its closing quote).
 * Returns the length written. Idempotent: redacting twice changes nothing
 * more. */
size_t rt_log_redact(const char *in, char *out, size_t cap);

/* Builds the complete line that every handler of this project writes:
 *   ts=... level=... msg="<msg>" [module=<module>] [req=<reqid>] [<kv>]\n
 * module and reqid NULL or "" are left out; a reqid holding a space, '"',
 * '=' or '\\' is quoted. msg and kv are redacted (rt_log_redact); the line
 * is cut to cap, always ending in '\n' and NUL-terminated. Returns its
 * length without the NUL (cap >= 64). */
size_t rt_log_format_line(char *out, size_t cap, int level, const char *module,
                          const char *msg, const char *reqid, const char *kv);

#ifdef __cplusplus
}
#endif
#endif /* CACHESVC_RT_LOG_H */
