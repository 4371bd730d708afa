/* Authorisation decisions of the submission path: may this credential (or
 * this unauthenticated relay-network client) use this sender, this
 * recipient, this rate, this much quota, these headers and this content?
 * Each check answers "allowed" or a complete SMTP reply naming the rule, and
 * the reason counted in metrics. No I/O besides the limiter and counters the
 * caller hands in; the clock comes from the caller. */
#ifndef SLUICE_POLICY_AUTHZ_H
#define SLUICE_POLICY_AUTHZ_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "core/events.h"

struct cred;
struct config;
struct smtp_path;
struct ratelimit;
struct accounting;

#define AUTHZ_REPLY_MAX 512
/* How much of a header field value is checked; longer From/Sender fields of
 * a restricted credential are refused rather than checked in part. */
#define AUTHZ_FIELD_MAX 4096

/* Returned by the checks below when the request is refused. */
#define AUTHZ_REFUSED (-1)

/* A refusal: the reply to send (printable ASCII, no CRLF) and its reason. */
struct authz_refusal {
    enum reject_reason reason;
    char reply[AUTHZ_REPLY_MAX];
};

/* The largest message this sender may submit: the relay's max_message_size,
 * lowered by the credential's max_size. */
long long authz_size_limit(const struct cred *c, const struct config *cfg);

/* MAIL FROM. c is the authenticated credential, or NULL for a client that
 * relays without AUTH from relay_networks (cfg->policy_relay_allow_from
 * applies). Checks revocation (530 5.7.0), the sender patterns (550 5.7.1)
 * and a declared SIZE against the credential's max_size (552 5.3.4).
 * Returns 0, or AUTHZ_REFUSED with out filled. */
int authz_mail(const struct cred *c, const struct config *cfg, const struct smtp_path *sender,
               long long declared_size, struct authz_refusal *out);

/* RCPT TO. Refused for everyone: a local part with '%' or '!' (the percent
 * hack and bang paths, RFC 5321 section 3.6.1 and 2.3.5 routing through
 * this relay), and a quoted local part holding '@', '%' or '!'. Then the
 * credential's allow_rcpt patterns (or cfg->policy_relay_allow_rcpt for c
 * NULL). 550 5.7.1. */
int authz_rcpt(const struct cred *c, const struct config *cfg, const struct smtp_path *rcpt,
               struct authz_refusal *out);

/* One message against the credential's rate and the per-address rate
 * (rate_per_ip, "0" or "" for none). Takes one unit from each bucket that
 * applies. 450 4.7.1 with the wait. */
int authz_rate(struct ratelimit *rl, const struct cred *c, const char *client_ip,
               const char *rate_per_ip, uint64_t now_ms, struct authz_refusal *out);

/* The credential's daily or monthly quota (accounting counts accepted
 * messages). 452 4.7.1 with the time the quota resets. A store error lets
 * the message through (the quota is a budget, not a security boundary). */
int authz_quota(struct accounting *a, const struct cred *c, time_t now, struct authz_refusal *out);
/* The credential's rate across every relay sharing a PostgreSQL store
 * (accounting_rate_take; nothing with SQLite): 450 4.7.1 when this
 * window is full. A store that does not answer limits nothing here: each
 * relay's own limiter (authz_rate) still applies. */
int authz_shared_rate(struct accounting *a, const struct cred *c, time_t now,
                      struct authz_refusal *out);

/* The same, keeping the reservation in *t so that a transaction that ends
 * without acceptance gives it back (accounting_quota_give_back). */
struct quota_ticket;
int authz_quota_reserve(struct accounting *a, const struct cred *c, time_t now,
                        struct quota_ticket *t, struct authz_refusal *out);

/* The received size against the credential's max_size (552 5.3.4). */
int authz_size(const struct cred *c, const struct config *cfg, size_t size,
               struct authz_refusal *out);

/* The message header: required fields (cfg->policy_required_headers,
 * 550 5.6.0), then every From: and Sender: mailbox domain must be covered
 * by the credential's allow_from patterns so that DMARC alignment holds
 * (550 5.7.1). msg is the message as submitted (header and body). */
int authz_headers(const struct cred *c, const struct config *cfg, const char *msg, size_t len,
                  struct authz_refusal *out);

/* Attachments of an accepted message as "name;type;size" strings. */
struct authz_attachments {
    char **v;
    size_t n;
};
void authz_attachments_free(struct authz_attachments *a);

/* Content policy: the MIME walk and the blocked extensions and types of
 * cfg (554 5.7.1). On success atts (may be NULL) lists the named parts or
 * those with disposition attachment; allocated, release with
 * authz_attachments_free. Out of memory is 451 4.3.0. */
int authz_content(const struct config *cfg, const char *msg, size_t len, struct authz_refusal *out,
                  struct authz_attachments *atts);

#endif
