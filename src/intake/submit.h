/* The protocol-free submission transaction: what happens to a message
 * between a front door (the SMTP session, the HTTP API, the sendmail entry)
 * and the spool. A door parses its own protocol and then calls, in order:
 *
 *   submit_begin   who is sending (credential, client address, TLS)
 *   submit_mail    the envelope sender: sender rules, rate, quota
 *   submit_rcpt    once per recipient: recipient rules, recipient limit
 *   submit_space / submit_wrote, or submit_feed
 *                  the content, in as many pieces as it arrives; the DKIM
 *                  body hash runs while it streams
 *   submit_finish  framing, size, header and content rules, the trace and
 *                  Message-ID/Date fields, DKIM-Signature, spool_put; the
 *                  callback runs once the message is durable (or not)
 *   submit_free    at any point; the transaction is freed whole
 *
 * Every refusal comes back as a struct authz_refusal (an SMTP reply line
 * and a reason); the door translates it (the HTTP API maps the reply code
 * to a status). The refusal has already been reported (log event, metric,
 * accounting row) by the time the door sees it.
 *
 * Once durable, the accepted event is raised and relay->hooks.message_durable
 * hands the id to the queue: intake never sees the queue.
 *
 * Threads: the event-loop thread only, like the spool. */
#ifndef SLUICE_INTAKE_SUBMIT_H
#define SLUICE_INTAKE_SUBMIT_H

#include "mail/address.h"
#include "policy/authz.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct relay;
struct cred;
struct submit_tx;

/* Who is submitting. Every string is copied by submit_begin. */
struct submit_origin {
    const char *door;        /* "smtp", "http", "sendmail": names the door in logs */
    const char *client_ip;   /* the peer's address, "" for a local door */
    const char *helo;        /* the EHLO/HELO name, or a door's own name ("api") */
    const char *auth_user;   /* the credential name; NULL when not authenticated */
    const char *auth_method; /* "PLAIN", "api-key", ...; NULL when not authenticated */
    const char *tls_desc;    /* "TLSv1.3 TLS_AES_256_GCM_SHA384"; NULL without TLS */
    const struct cred *cred; /* the rules that apply; NULL for a relay-network client */
    bool esmtp;              /* the trace field says ESMTP (RFC 3848 names) */
};

/* What a door that decodes its own framing already knows about the content
 * (the SMTP DATA decoder does); without it submit_finish scans the content. */
struct submit_framing {
    bool bare_lf, bare_cr; /* a lone LF or CR: refused (SMTP smuggling defence) */
    bool nul_byte;
    bool eight_bit;
    size_t longest_line; /* octets, without the CRLF */
};

/* The result handed to the door's callback. err is 0 when the message is
 * durable; then id names it and the reply is "250 ... queued as ID". On err
 * < 0 the reply says why (451/452) and nothing was accepted. */
struct submit_result {
    int err;
    uint64_t id;
    char id_str[17];
    const char *message_id; /* the message's Message-ID without <>, valid in the callback */
    const char *reply;      /* the SMTP reply line, without CRLF */
};

typedef void (*submit_done_fn)(void *arg, const struct submit_result *res);

/* Return codes */
#define SUBMIT_OK 0
#define SUBMIT_EREFUSED (-1) /* refused by a rule; ref says why */
#define SUBMIT_ENOMEM (-2)

struct submit_tx *submit_begin(struct relay *r, const struct submit_origin *o);

/* The envelope sender (path->addr, "" for the null sender) and the MAIL
 * parameters (SIZE, SMTPUTF8, ENVID, RET). A second call replaces the first. */
int submit_mail(struct submit_tx *tx, const struct smtp_path *from,
                const struct smtp_mail_params *mp, struct authz_refusal *ref);

/* One recipient, after submit_mail. */
int submit_rcpt(struct submit_tx *tx, const struct smtp_path *rcpt, struct authz_refusal *ref);

size_t submit_rcpt_count(const struct submit_tx *tx);

/* Content, written in place: submit_space returns room for n more octets,
 * or NULL when the content is no longer kept (over the size limit, out of
 * the in-flight memory budget); the door then decodes into its own scratch
 * and still reports the count with submit_wrote, so the size is known and
 * submit_finish refuses with the right reply. */
char *submit_space(struct submit_tx *tx, size_t n);
void submit_wrote(struct submit_tx *tx, size_t n);
/* The same as one copy; returns false once the content is not kept. */
bool submit_feed(struct submit_tx *tx, const void *p, size_t n);
/* Octets of content seen so far, kept or not. */
size_t submit_content_len(const struct submit_tx *tx);
/* True once the content is no longer kept (size or memory budget). */
bool submit_discarding(const struct submit_tx *tx);
/* A refusal of the content already known before its end (the budget ran
 * out): lets a BDAT door answer a middle chunk early. */
bool submit_early_refusal(const struct submit_tx *tx, struct authz_refusal *ref);

void submit_set_framing(struct submit_tx *tx, const struct submit_framing *f);

/* Ends the content. Returns SUBMIT_EREFUSED with ref filled when a rule
 * refuses the message (nothing is spooled, done is not called), or
 * SUBMIT_OK: done(arg, result) runs exactly once, later, from the event
 * loop, when the spool has decided. Until then the transaction may not be
 * freed; after done, the door frees it. One transaction is one message: a
 * door that sends several begins one per message. */
int submit_finish(struct submit_tx *tx, submit_done_fn done, void *arg, struct authz_refusal *ref);

void submit_free(struct submit_tx *tx);

#endif
