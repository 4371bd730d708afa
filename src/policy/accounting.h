/* Per credential and UTC day counters of what happened to its mail:
 * accepted, delivered, deferred, bounced, rejected (by reason), bytes. Events
 * are counted in memory and written to the store (table `accounting`) in one
 * transaction at most every ACCOUNTING_FLUSH_MS or ACCOUNTING_FLUSH_EVENTS:
 * after a crash a counter may lag by that window; messages never do (the
 * spool, not this table, is what makes a message durable). Thread-safe. */
#ifndef SLUICE_POLICY_ACCOUNTING_H
#define SLUICE_POLICY_ACCOUNTING_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "policy/creds.h"

#define ACCOUNTING_FLUSH_MS 1000
#define ACCOUNTING_FLUSH_EVENTS 512
#define ACCOUNTING_REASON_MAX 63
/* The name counted for events without a credential (e.g. a failed AUTH). */
#define ACCOUNTING_NO_CRED "-"

enum acct_event {
    ACCT_ACCEPTED = 0, /* spooled, 250 sent: what quotas count */
    ACCT_DELIVERED,    /* one recipient delivered */
    ACCT_DEFERRED,     /* one recipient got a temporary failure */
    ACCT_BOUNCED,      /* one recipient failed for good */
    ACCT_REJECTED,     /* refused at submission; reason says why */
    ACCT_EVENT_COUNT
};

struct accounting;
struct store;

/* Counters in an open store (with own, closed with them; a failure here
 * closes it at once); starts the background flusher. NULL with err set. */
struct accounting *accounting_open_store(struct store *st, bool own, char *err, size_t errlen);
/* The same over the SQLite file at db_path (migrating its schema). */
struct accounting *accounting_open(const char *db_path, char *err, size_t errlen);
/* Flushes what is pending and stops the flusher. */
void accounting_close(struct accounting *a);

/* Counts one event now (UTC day of the call). cred NULL or "" counts under
 * ACCOUNTING_NO_CRED; reason (NULL = none) is cut at ACCOUNTING_REASON_MAX.
 * Never blocks on the disk. Returns 0, or -1 for an unknown event, a name
 * longer than CRED_NAME_MAX or no memory. */
int accounting_add(struct accounting *a, const char *cred, enum acct_event ev, const char *reason,
                   long long bytes);
/* The same, dated `when` (for imports and tests). */
int accounting_add_at(struct accounting *a, const char *cred, enum acct_event ev,
                      const char *reason, long long bytes, time_t when);

/* Writes all pending counts in one transaction. 0, or -1 (they stay
 * pending for the next try). */
int accounting_flush(struct accounting *a);

/* Messages accepted for cred from the UTC day holding `since` on, including
 * pending ones. Fast: recent days are cached in memory per credential.
 * Returns -1 on a database error or a name longer than CRED_NAME_MAX. */
long long accounting_count(struct accounting *a, const char *cred, time_t since);

/* Start of the quota period holding now: 00:00 UTC today for a daily quota,
 * the 1st of this month for a monthly one. */
time_t accounting_period_start(enum cred_period per, time_t now);

/* 1 if one more accepted message would exceed the credential's quota, 0 if
 * not (or it has none), -1 on a database error. A read: nothing reserved. */
int accounting_over_quota(struct accounting *a, const struct cred *c, time_t now);

/* Reserves one message of the credential's quota in the store's shared
 * counter for the period holding now, in one atomic conditional increment,
 * so nodes sharing a store never together pass the quota. 1 reserved (or no
 * quota), 0 the quota is used up, -1 the store did not answer. A
 * reservation taken here stays counted; accounting_quota_reserve keeps a
 * ticket so that a transaction ending without 250 can give it back. */
int accounting_quota_take(struct accounting *a, const struct cred *c, time_t now);

/* A reservation that can be given back: the key and window it was taken
 * from. held is true from a successful take until give_back or keep. */
struct quota_ticket {
    bool held;
    char key[80];
    char window[16];
};

/* accounting_quota_take that fills *t when a unit was taken. */
int accounting_quota_reserve(struct accounting *a, const struct cred *c, time_t now,
                             struct quota_ticket *t);

/* The credential's rate across every relay sharing the store: one unit of
 * the fixed window (now / period) of a shared counter. Only a store
 * several nodes share (PostgreSQL) has such a counter; with SQLite, or a
 * credential without a rate, this takes nothing and returns 1. 1 taken, 0
 * the window is full (*retry_s: seconds until the next one), -1 the store
 * did not answer. */
int accounting_rate_take(struct accounting *a, const struct cred *c, time_t now, unsigned *retry_s);

/* The transaction the reservation was for ended without acceptance: the
 * unit goes back (to the window it came from, even after midnight). */
void accounting_quota_give_back(struct accounting *a, struct quota_ticket *t);

/* One summed row for the CLI. */
struct accounting_row {
    const char *cred;
    const char *day; /* "YYYY-MM-DD" (UTC) */
    enum acct_event event;
    const char *reason; /* "" when none */
    long long count;
    long long bytes;
};

/* Calls fn for each (cred, day, event, reason) row from the day of `since`
 * on, for one credential or all (cred NULL), ordered by cred, day, event,
 * reason. Flushes first. fn returning non-zero stops early. */
int accounting_query(struct accounting *a, const char *cred, time_t since,
                     int (*fn)(const struct accounting_row *row, void *arg), void *arg);

const char *accounting_event_name(enum acct_event ev);
/* Returns 0 and sets *ev, or -1 for an unknown name. */
int accounting_event_parse(const char *name, enum acct_event *ev);

#endif
