/* Rate limits for the submission path: a GCRA (token bucket) limiter keyed by
 * credential name or source address, and a tracker of failed AUTH attempts
 * per source address that first slows answers down, then blocks. Time is
 * passed in by the caller (monotonic milliseconds), so tests need no sleeps. */
#ifndef SLUICE_POLICY_RATELIMIT_H
#define SLUICE_POLICY_RATELIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Longest key (credential name or textual address) kept. */
#define RATELIMIT_KEY_MAX 255

/* "count per period": 100/min is {100, 60000}. */
struct rate_spec {
    uint64_t count;
    uint64_t period_ms;
};

/* Parses "100/min", "10/s", "5000/h", "10000/day" (also "sec", "second",
 * "m", "minute", "hour", "d", with optional spaces, and a count before the
 * unit as in "50/10min"). Returns 0 or -1. */
int rate_spec_parse(const char *s, size_t len, struct rate_spec *out);
/* Writes the spec back in its shortest usual form ("100/min"). Returns the
 * length, or -1 when out is too small. */
int rate_spec_format(const struct rate_spec *spec, char *out, size_t out_size);

struct rate_verdict {
    bool allowed;
    uint64_t retry_after_ms; /* 0 when allowed */
    uint32_t retry_after_s;  /* rounded up, at least 1 when refused */
    uint64_t remaining;      /* further requests allowed right now */
};

struct ratelimit;

/* A limiter holding at most max_entries keys (older idle keys are dropped
 * first). seed keys the hash table against chosen collisions; NULL is
 * allowed in tests. NULL on allocation failure or max_entries == 0. */
struct ratelimit *ratelimit_new(size_t max_entries, const unsigned char seed[16]);
void ratelimit_free(struct ratelimit *rl);

/* Takes `cost` units for key under spec at time now_ms, or refuses and says
 * when that many would be available. A refused request takes nothing.
 * Returns 0, or -1 on a bad argument (empty or over-long key, zero spec,
 * cost above the burst). Constant time per call (amortised). */
int ratelimit_take(struct ratelimit *rl, const char *key, const struct rate_spec *spec,
                   uint64_t cost, uint64_t now_ms, struct rate_verdict *out);
/* Drops every key whose bucket is full again (nothing to remember). */
void ratelimit_expire(struct ratelimit *rl, uint64_t now_ms);
size_t ratelimit_count(const struct ratelimit *rl);
/* Keys dropped while still limited because the table was full. */
uint64_t ratelimit_evictions(const struct ratelimit *rl);

/* The SMTP reply for a refusal, e.g.
 * "450 4.7.1 Rate limit of 100/min for credential 'shop' exceeded; try again in 12 s".
 * `what` names the key's kind ("credential", "address"); key characters
 * outside printable ASCII, and quotes, are shown as '?'. Returns the length
 * or -1 when out is too small. */
int ratelimit_reply(const struct rate_spec *spec, const struct rate_verdict *v, const char *what,
                    const char *key, char *out, size_t out_size);

/* ---- failed authentication per source address ---- */

struct authfail_config {
    unsigned slow_after; /* failures before answers are delayed (N) */
    unsigned delay_ms;   /* first delay; doubles with each further failure */
    unsigned delay_max_ms;
    unsigned block_after; /* failures that block the address (M), > slow_after */
    uint64_t block_ms;    /* how long a block lasts */
    uint64_t forget_ms;   /* failures older than this no longer count */
    size_t max_entries;
};

struct authfail_verdict {
    bool blocked;
    uint64_t retry_after_ms; /* while blocked */
    uint32_t retry_after_s;
    uint32_t delay_ms; /* wait this long before answering the failure */
    unsigned failures; /* recent failures counted for the address */
};

struct authfail;

/* NULL on allocation failure or an inconsistent config. */
struct authfail *authfail_new(const struct authfail_config *cfg, const unsigned char seed[16]);
void authfail_free(struct authfail *af);
/* Before an AUTH attempt (or at connect): is the address blocked? */
void authfail_check(struct authfail *af, const char *addr, uint64_t now_ms,
                    struct authfail_verdict *out);
/* After a failed attempt: counts it and says how long to wait before
 * answering 535 and whether the address is now blocked. */
void authfail_record(struct authfail *af, const char *addr, uint64_t now_ms,
                     struct authfail_verdict *out);
/* After a success the count is left alone: a valid account must not let
 * its holder launder guesses at other accounts from the same address. */
size_t authfail_count(const struct authfail *af);
/* "421 4.7.0 Too many failed authentications from 192.0.2.1; try again in 300 s" */
int authfail_reply(const struct authfail_verdict *v, const char *addr, char *out, size_t out_size);

#endif
