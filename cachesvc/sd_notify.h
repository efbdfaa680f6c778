/*
 * sd_notify.h: the systemd service notification protocol, without
 * libsystemd.
 *
 * A service started with Type=notify tells its manager how it is doing by
 * sending one datagram of newline-separated VAR=value assignments to the
 * AF_UNIX socket named in $NOTIFY_SOCKET (a path, or "@name" for the
 * abstract namespace): READY=1 once it serves, RELOADING=1 (with
 * MONOTONIC_USEC) when a reload starts and READY=1 when it ends,
 * STOPPING=1 when it begins to stop, WATCHDOG=1 as a keep-alive while
 * $WATCHDOG_USEC is set, STATUS=<text> for `systemctl status`. Outside
 * systemd the variable is unset and every call is a no-op.
 *
 * Callable from any thread or coroutine: each call opens, uses and closes
 * its own socket and keeps no state. A send waits at most 100 ms for room
 * in the manager's queue (it never waits for an answer), so calling it on
 * a runtime worker is fine. $NOTIFY_SOCKET is read on each call and never
 * unset, so the process may notify as often as it likes.
 */
#ifndef CACHESVC_SD_NOTIFY_H
#define CACHESVC_SD_NOTIFY_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Sends state (e.g. "READY=1" or "STOPPING=1\nSTATUS=draining") as one
 * datagram to $NOTIFY_SOCKET. Returns 1 when it was sent, 0 when
 * $NOTIFY_SOCKET is unset or empty (nothing to do), or a negative errno:
 * -EINVAL for an empty state or an address that is neither absolute nor
 * abstract, -ENAMETOOLONG for one that does not fit a sockaddr_un, or the
 * socket's error (-ENOENT/-ECONNREFUSED: nobody listens; -EAGAIN: the
 * manager's queue stayed full for 100 ms). A failure changes nothing; the
 * caller may log it and go on. */
int svc_sd_notify(const char *state);

/* svc_sd_notify with a printf-style state; a state longer than 4 KiB is
 * -EMSGSIZE and is not sent. */
int svc_sd_notifyf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Sends "RELOADING=1\nMONOTONIC_USEC=<CLOCK_MONOTONIC now in µs>", the
 * start of a reload in the form systemd 253+ requires for
 * Type=notify-reload (older managers take RELOADING=1 and ignore the
 * timestamp). The reload ends with svc_sd_notify("READY=1"). Returns as
 * svc_sd_notify. */
int svc_sd_notify_reloading(void);

/* The watchdog interval the manager asked for, in microseconds: the value
 * of $WATCHDOG_USEC when it is a positive integer and $WATCHDOG_PID is
 * unset or equals getpid() (the variables were meant for this process).
 * Returns 0 when the watchdog is not enabled for this process, -EINVAL
 * when either variable is not a valid number. The service sends
 * "WATCHDOG=1" every half of this interval. */
int64_t svc_sd_watchdog_usec(void);

#ifdef __cplusplus
}
#endif
#endif /* CACHESVC_SD_NOTIFY_H */
