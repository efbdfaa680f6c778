/*
 * log.h: the service's logger: structured logs in logfmt to stderr, for
 * the service's own lines and, once svc_log_install() made it the runtime's
 * log handler (runtime/rt_log.h), for every module's (store, redis, inv,
 * rt, kafka).
 *
 * One line per event:
 *   ts=<RFC3339 UTC ms> level=<l> msg="<text>" [module=<m>] [req=<id>] k=v ...
 * module names the module that logged (absent on the service's own lines);
 * req is the request id of the request being served when the line is
 * logged from one. Each line is written with one write(2), so lines of
 * concurrent writers never interleave. The level is a run-time setting
 * (admin API, SIGHUP) shared with the runtime's hook (rt_log_set_level).
 *
 * Secrets: the password of a URL's user info and any password=... value
 * are replaced by <redacted> in every line (rt_log_redact).
 *
 * Repeated lines are rate-limited per call site (module + message, digits
 * ignored): in each second of a site, the first svc_log_set_burst() lines
 * (5) are written and the rest counted; the count is written as one line of
 * that site with suppressed=<n> when the site logs again after its second,
 * when the periodic tick finds its second over, or at exit. Sites share a
 * fixed table of 512 slots; two sites in one slot share a budget (the
 * summary names the site that opened the second). Debug lines are never
 * suppressed.
 *
 * Callable from any thread or coroutine (librdkafka's threads included);
 * it never switches coroutines and keeps no thread-local state.
 */
#ifndef CACHESVC_LOG_H
#define CACHESVC_LOG_H

#include <stddef.h>
#include <stdint.h>

#include "cachesvc/config.h"

#ifdef __cplusplus
extern "C" {
#endif

void svc_log_set_level(int level);
int svc_log_get_level(void);
/* Where lines go; 2 (stderr) by default. For tests. */
void svc_log_set_fd(int fd);

/* Where svc_log takes the request id of a line logged with reqid NULL:
 * fn copies the id of the request the calling coroutine serves into buf
 * (NUL-terminated, at most cap - 1 bytes) and returns its length, 0 when
 * there is none. The service installs the HTTP server's http_request_id,
 * so every line logged while a request is handled carries req=<the
 * X-Request-Id of its answer>. NULL (the default) = no id. fn must never
 * switch coroutines and must be callable from any thread (it answers 0
 * off a coroutine). */
typedef size_t (*svc_log_reqid_fn)(char *buf, size_t cap);
void svc_log_set_reqid_source(svc_log_reqid_fn fn);

/* Logs msg with the key=value pairs that fmt (printf-style, may be NULL)
 * produces. reqid NULL means the request being served, if any (see
 * svc_log_set_reqid_source); "" means none. Lines longer than 2 KiB are
 * cut. Values that may contain spaces should be quoted by the caller's fmt
 * ("k=\"%s\"") or passed through rt_log_q(). msg should be a fixed text:
 * the rate limit counts lines by it. */
void svc_log(int level, const char *reqid, const char *msg, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Makes this logger the runtime's log handler (rt_log_set_handler), so
 * every module's lines come out here with the request id and the rate
 * limit; starts the tick that writes the counts of suppressed lines within
 * about a second after their second ends, and writes the remaining counts
 * at exit (atexit). Idempotent; the service calls it in svc_open. */
void svc_log_install(void);

/* Lines written per site per second before the rest are counted; 0 turns
 * the rate limit off. 5 by default. */
void svc_log_set_burst(int lines_per_second);

/* Writes the count of every site whose second is over and that suppressed
 * lines (the tick calls it). */
void svc_log_tick(void);
/* Writes the count of every site that suppressed lines, its second over
 * or not (at exit). */
void svc_log_flush(void);

/* For tests: the clock the rate limit reads (monotonic ns); NULL restores
 * CLOCK_MONOTONIC. */
void svc__log_set_clock(int64_t (*now_ns)(void));

#define svc_log_enabled(l) ((l) >= svc_log_get_level())
#define SVC_DEBUG(...) do { if (svc_log_enabled(SVC_LOG_DEBUG)) svc_log(SVC_LOG_DEBUG, __VA_ARGS__); } while (0)
#define SVC_INFO(...)  svc_log(SVC_LOG_INFO, __VA_ARGS__)
#define SVC_WARN(...)  svc_log(SVC_LOG_WARN, __VA_ARGS__)
#define SVC_ERROR(...) svc_log(SVC_LOG_ERROR, __VA_ARGS__)

#ifdef __cplusplus
}
#endif
#endif /* CACHESVC_LOG_H */
