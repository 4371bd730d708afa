/* The event bus: the parts that see something happen call events_*(), and
 * the calls go to the observer the daemon installed in struct relay (its
 * listeners live in cli/observe.c). The bus knows no listener, so any part
 * may report an event without depending on the log, the audit chain, the
 * metrics, accounting or webhooks. No observer: events go nowhere. */
#include "core/events.h"

#include "core/relay.h"

#include <stddef.h>

static const char *const reason_names[REJECT_REASON_COUNT] = {
    [REJECT_UNAUTHENTICATED] = "unauthenticated",
    [REJECT_SENDER] = "sender",
    [REJECT_RECIPIENT] = "recipient",
    [REJECT_HEADER_FROM] = "header_from",
    [REJECT_SIZE] = "size",
    [REJECT_RECIPIENTS] = "recipients",
    [REJECT_RATE] = "rate",
    [REJECT_QUOTA] = "quota",
    [REJECT_CONTENT] = "content",
    [REJECT_SMUGGLING] = "smuggling",
    [REJECT_SYNTAX] = "syntax",
    [REJECT_STORAGE] = "storage",
    [REJECT_SIGNING] = "signing",
    [REJECT_LINE_TOO_LONG] = "line_too_long",
    [REJECT_DEADLINE] = "deadline",
    [REJECT_MEMORY] = "memory",
};

const char *reject_reason_name(enum reject_reason r)
{
    return r < REJECT_REASON_COUNT ? reason_names[r] : "other";
}

#define OBSERVER(r, fn) ((r) && (r)->observer && (r)->observer->fn)

void events_auth(struct relay *r, const char *client_ip, const char *method, const char *cred,
                 bool ok, const char *reason)
{
    if (OBSERVER(r, auth))
        r->observer->auth(r, client_ip, method, cred, ok, reason);
}

void events_reject(struct relay *r, const char *client_ip, const char *cred, enum reject_reason why,
                   const char *reply)
{
    if (OBSERVER(r, reject))
        r->observer->reject(r, client_ip, cred, why, reply);
}

void events_security(struct relay *r, const char *client_ip, const char *what, const char *detail)
{
    if (OBSERVER(r, security))
        r->observer->security(r, client_ip, what, detail);
}

void events_accepted(struct relay *r, const char *queue_id, const char *message_id,
                     const char *client_ip, const char *cred, const char *sender,
                     const char *const *rcpts, size_t n_rcpts, size_t size, const char *tls,
                     const char *const *attachments, size_t n_attachments)
{
    if (OBSERVER(r, accepted))
        r->observer->accepted(r, queue_id, message_id, client_ip, cred, sender, rcpts, n_rcpts,
                              size, tls, attachments, n_attachments);
}

void events_delivery(struct relay *r, const struct spool_msg *m, uint32_t rcpt, const char *state,
                     const char *upstream, const char *reply, double duration_s)
{
    if (OBSERVER(r, delivery))
        r->observer->delivery(r, m, rcpt, state, upstream, reply, duration_s);
}

void events_admin(struct relay *r, const char *action, const char *detail)
{
    if (OBSERVER(r, admin))
        r->observer->admin(r, action, detail);
}
