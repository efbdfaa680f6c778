/*
 * log.h: structured logs in logfmt to stderr.
 *
 * One line per event: ts=<RFC3339 UTC ms> level=<l> msg="<text>" [req=<id>]
 * followed by the caller's key=value pairs; req is the request id of the
 * request being served when the line is logged from one. Each line is written with one
 * write(2), so lines of concurrent writers never interleave. The level is a
 * run-time setting (admin API, SIGHUP). Callable from any thread or
 * coroutine; it never switches coroutines and keeps no thread-local state.
 */
#ifndef CACHESVC_LOG_H
#define CACHESVC_LOG_H

#include <stddef.h>

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
 * switch coroutines. */
typedef size_t (*svc_log_reqid_fn)(char *buf, size_t cap);
void svc_log_set_reqid_source(svc_log_reqid_fn fn);

/* Logs msg with the key=value pairs that fmt (printf-style, may be NULL)
 * produces. reqid NULL means the request being served, if any (see
 * svc_log_set_reqid_source); "" means none. Lines longer than 2 KiB are
 * cut. Values that may contain spaces should be quoted by the caller's fmt
 * ("k=\"%s\""). */
void svc_log(int level, const char *reqid, const char *msg, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#define svc_log_enabled(l) ((l) >= svc_log_get_level())
#define SVC_DEBUG(...) do { if (svc_log_enabled(SVC_LOG_DEBUG)) svc_log(SVC_LOG_DEBUG, __VA_ARGS__); } while (0)
#define SVC_INFO(...)  svc_log(SVC_LOG_INFO, __VA_ARGS__)
#define SVC_WARN(...)  svc_log(SVC_LOG_WARN, __VA_ARGS__)
#define SVC_ERROR(...) svc_log(SVC_LOG_ERROR, __VA_ARGS__)

#ifdef __cplusplus
}
#endif
#endif /* CACHESVC_LOG_H */
