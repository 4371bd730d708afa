/* Events: the one place where something that happened is reported. The
 * calls go to the observer installed in struct relay; the daemon's observer
 * (cli/observe.c) writes the JSON log line, appends security-relevant events
 * to the audit chain, counts for /metrics, updates per-credential accounting
 * and queues webhooks, so the parts that detect events do not need to know
 * who listens. Recipient addresses are pseudonymised there when privacy is
 * on. */
#ifndef SLUICE_CORE_EVENTS_H
#define SLUICE_CORE_EVENTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct relay;
struct spool_msg;

/* Why a message or command was refused; one counter each in /metrics. */
enum reject_reason {
    REJECT_UNAUTHENTICATED = 0, /* MAIL without AUTH from outside relay_networks */
    REJECT_SENDER,              /* envelope sender not allowed for the credential */
    REJECT_RECIPIENT,           /* recipient not allowed for the credential */
    REJECT_HEADER_FROM,         /* header From/Sender domain not allowed */
    REJECT_SIZE,
    REJECT_RECIPIENTS, /* too many recipients */
    REJECT_RATE,       /* rate limit */
    REJECT_QUOTA,
    REJECT_CONTENT,       /* blocked attachment, missing required header */
    REJECT_SMUGGLING,     /* bare CR/LF in DATA */
    REJECT_SYNTAX,        /* malformed message (long line, NUL, empty) */
    REJECT_STORAGE,       /* spool write failed */
    REJECT_SIGNING,       /* DKIM signing failed (deferred) */
    REJECT_LINE_TOO_LONG, /* command or AUTH line over its limit */
    REJECT_DEADLINE,      /* command or transaction took too long (slow client) */
    REJECT_MEMORY,        /* in-flight message budget exhausted */
    REJECT_REASON_COUNT
};

const char *reject_reason_name(enum reject_reason r);

/* What listens to the events: one function per kind of event, each may be
 * NULL. The functions below call the relay's observer with their arguments. */
struct events_observer {
    void (*auth)(struct relay *r, const char *client_ip, const char *method, const char *cred,
                 bool ok, const char *reason);
    void (*reject)(struct relay *r, const char *client_ip, const char *cred, enum reject_reason why,
                   const char *reply);
    void (*security)(struct relay *r, const char *client_ip, const char *what, const char *detail);
    void (*accepted)(struct relay *r, const char *queue_id, const char *message_id,
                     const char *client_ip, const char *cred, const char *sender,
                     const char *const *rcpts, size_t n_rcpts, size_t size, const char *tls,
                     const char *const *attachments, size_t n_attachments);
    void (*delivery)(struct relay *r, const struct spool_msg *m, uint32_t rcpt, const char *state,
                     const char *upstream, const char *reply, double duration_s);
    void (*admin)(struct relay *r, const char *action, const char *detail);
};

/* A client authenticated or failed to. method: "PLAIN", "LOGIN",
 * "SCRAM-SHA-256", "client-cert", "api-key". cred may be NULL on failure. */
void events_auth(struct relay *r, const char *client_ip, const char *method, const char *cred,
                 bool ok, const char *reason);

/* A command or message was refused with `reply` (the full SMTP reply). */
void events_reject(struct relay *r, const char *client_ip, const char *cred, enum reject_reason why,
                   const char *reply);

/* A security-relevant oddity: "starttls_injection", "tls_failure",
 * "auth_blocked", ... with a free-form detail. */
void events_security(struct relay *r, const char *client_ip, const char *what, const char *detail);

/* A message is durable and answered 250. rcpts are pseudonymised in the
 * log when privacy is on. attachments: "name;type;size" entries or NULL. */
void events_accepted(struct relay *r, const char *queue_id, const char *message_id,
                     const char *client_ip, const char *cred, const char *sender,
                     const char *const *rcpts, size_t n_rcpts, size_t size, const char *tls,
                     const char *const *attachments, size_t n_attachments);

/* Delivery outcomes, one call per recipient. state: "delivered",
 * "deferred", "failed", "held". */
void events_delivery(struct relay *r, const struct spool_msg *m, uint32_t rcpt, const char *state,
                     const char *upstream, const char *reply, double duration_s);

/* An operator or configuration action worth auditing ("queue.delete", "reload"). */
void events_admin(struct relay *r, const char *action, const char *detail);

#endif
