/* The recent delivery events the API answers from (GET /v1/events and the
 * events of GET /v1/messages/{id}): a ring buffer in memory, numbered by a
 * sequence that only grows, so a client pages with ?since=SEQ. It is not
 * durable: after a restart the numbering starts again above the current
 * time in milliseconds, so a cursor from before never skips new events, and
 * the older events are in the log and the webhooks. */
#ifndef SLUICE_HTTPD_API_EVENTS_H
#define SLUICE_HTTPD_API_EVENTS_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

struct api_event {
    uint64_t seq;
    time_t at;
    char type[16]; /* "accepted", "delivered", "deferred", "failed", "held", "retry" */
    char id[17];   /* the message id */
    char *rcpt;    /* NULL for message-wide events */
    char *cred;    /* the sending credential's name, NULL for none */
    char *upstream, *reply;
};

struct api_events;

struct api_events *api_events_new(size_t cap);
void api_events_free(struct api_events *e);

/* Copies the strings (each may be NULL). */
void api_events_add(struct api_events *e, time_t at, const char *type, const char *id,
                    const char *rcpt, const char *cred, const char *upstream, const char *reply);

/* Calls fn for up to limit events with seq > since, oldest first, that
 * match cred and id when those are not NULL. Returns the seq of the last
 * event passed to fn, or since when none. */
uint64_t api_events_each(const struct api_events *e, uint64_t since, size_t limit, const char *cred,
                         const char *id, void (*fn)(void *arg, const struct api_event *ev),
                         void *arg);

/* The oldest seq still held (0 when empty): a cursor below it lost events. */
uint64_t api_events_oldest(const struct api_events *e);

#endif
