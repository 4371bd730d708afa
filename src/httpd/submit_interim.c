/* An interim implementation of intake/submit.h, built only while the
 * intake's own src/intake/submit.c is not in the tree (src/httpd/meson.build
 * drops this file as soon as it is). It applies the same policy checks in
 * the same order as the SMTP session, without DKIM signing, so the API door
 * can be built and tested against the contract. */
#include "intake/submit.h"

#include "core/config.h"
#include "core/events.h"
#include "core/log.h"
#include "core/relay.h"
#include "mail/intake.h"
#include "policy/accounting.h"
#include "policy/creds.h"
#include "policy/policy.h"
#include "queue/queue.h"
#include "spool/spool.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>

struct submit_tx {
    struct relay *r;
    char *ip, *helo, *user, *tls;
    const struct cred *cred;
    struct smtp_path from;
    bool have_from, smtputf8, esmtp;
    char **rcpts;
    size_t n_rcpts;
    char *buf;
    size_t len, cap, seen;
    long long limit;
    bool discarding;
    struct intake_result ir;
    struct authz_attachments atts;
    submit_done_fn done;
    void *arg;
};

static char *dup0(const char *s)
{
    return s ? strdup(s) : NULL;
}

struct submit_tx *submit_begin(struct relay *r, const struct submit_origin *o)
{
    struct submit_tx *tx = calloc(1, sizeof *tx);
    if (!tx)
        return NULL;
    tx->r = r;
    tx->ip = dup0(o->client_ip ? o->client_ip : "");
    tx->helo = dup0(o->helo ? o->helo : "");
    tx->user = dup0(o->auth_user);
    tx->tls = dup0(o->tls_desc);
    tx->cred = o->cred;
    tx->esmtp = o->esmtp;
    tx->limit = authz_size_limit(o->cred, r->cfg);
    if (!tx->ip || !tx->helo) {
        submit_free(tx);
        return NULL;
    }
    return tx;
}

static int refused(struct submit_tx *tx, struct authz_refusal *ref)
{
    tx->r->n.rejected++;
    events_reject(tx->r, tx->ip, tx->user, ref->reason, ref->reply);
    return SUBMIT_EREFUSED;
}

int submit_mail(struct submit_tx *tx, const struct smtp_path *from,
                const struct smtp_mail_params *mp, struct authz_refusal *ref)
{
    struct relay *r = tx->r;
    if (authz_mail(tx->cred, r->cfg, from, mp ? mp->size : -1, ref) < 0 ||
        authz_rate(r->ratelimit, tx->cred, tx->ip, r->cfg->rate_per_ip, policy_now_ms(), ref) <
            0 ||
        authz_quota(r->accounting, tx->cred, time(NULL), ref) < 0)
        return refused(tx, ref);
    tx->from = *from;
    tx->have_from = true;
    tx->smtputf8 = mp && mp->smtputf8;
    return SUBMIT_OK;
}

int submit_rcpt(struct submit_tx *tx, const struct smtp_path *rcpt, struct authz_refusal *ref)
{
    if ((int)tx->n_rcpts >= tx->r->cfg->max_recipients) {
        ref->reason = REJECT_RECIPIENTS;
        snprintf(ref->reply, sizeof ref->reply, "452 4.5.3 Too many recipients");
        return refused(tx, ref);
    }
    if (authz_rcpt(tx->cred, tx->r->cfg, rcpt, ref) < 0)
        return refused(tx, ref);
    char **g = realloc(tx->rcpts, (tx->n_rcpts + 1) * sizeof *g);
    if (!g || !(g[tx->n_rcpts] = strdup(rcpt->addr))) {
        if (g)
            tx->rcpts = g;
        return SUBMIT_ENOMEM;
    }
    tx->rcpts = g;
    tx->n_rcpts++;
    return SUBMIT_OK;
}

size_t submit_rcpt_count(const struct submit_tx *tx)
{
    return tx->n_rcpts;
}

char *submit_space(struct submit_tx *tx, size_t n)
{
    if (tx->discarding || (long long)(tx->len + n) > tx->limit) {
        tx->discarding = true;
        return NULL;
    }
    if (tx->len + n > tx->cap) {
        size_t cap = tx->cap ? tx->cap : 65536;
        while (cap < tx->len + n)
            cap *= 2;
        char *g = realloc(tx->buf, cap);
        if (!g) {
            tx->discarding = true;
            return NULL;
        }
        tx->buf = g;
        tx->cap = cap;
    }
    return tx->buf + tx->len;
}

void submit_wrote(struct submit_tx *tx, size_t n)
{
    tx->seen += n;
    if (!tx->discarding)
        tx->len += n;
}

bool submit_feed(struct submit_tx *tx, const void *p, size_t n)
{
    char *w = submit_space(tx, n);
    if (w)
        memcpy(w, p, n);
    submit_wrote(tx, n);
    return w != NULL;
}

size_t submit_content_len(const struct submit_tx *tx)
{
    return tx->seen;
}

bool submit_discarding(const struct submit_tx *tx)
{
    return tx->discarding;
}

bool submit_early_refusal(const struct submit_tx *tx, struct authz_refusal *ref)
{
    return false;
}

void submit_set_framing(struct submit_tx *tx, const struct submit_framing *f)
{
}

/* Bare CR or LF, NUL, over-long lines: the framing the SMTP decoder
 * checks, found by a scan. */
static const char *framing_refusal(const char *p, size_t n, enum reject_reason *why)
{
    size_t line = 0;
    *why = REJECT_SYNTAX;
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\r' && i + 1 < n && p[i + 1] == '\n') {
            i++;
            line = 0;
            continue;
        }
        if (p[i] == '\r' || p[i] == '\n') {
            *why = REJECT_SMUGGLING;
            return "550 5.5.2 Message refused: bare CR or LF in message data; lines must end "
                   "with CRLF (RFC 5321 2.3.8)";
        }
        if (!p[i])
            return "554 5.6.0 Message refused: NUL octet in message data";
        if (++line > 998)
            return "554 5.6.0 Message refused: a line is longer than 998 octets (RFC 5322 "
                   "2.1.1)";
    }
    return n ? NULL : "554 5.6.0 Message refused: empty message";
}

static void commit_done(void *arg, int err, uint64_t id)
{
    struct submit_tx *tx = arg;
    char ids[17];
    spool_id_str(id, ids);
    struct submit_result res = {.err = err, .id = id, .message_id = tx->ir.message_id};
    memcpy(res.id_str, ids, sizeof ids);
    char reply[128];
    if (!err) {
        queue_add(tx->r->queue, id);
        tx->r->n.accepted++;
        tx->r->n.bytes_accepted += tx->len;
        events_accepted(tx->r, ids, tx->ir.message_id, tx->ip, tx->user, tx->from.addr,
                        (const char *const *)tx->rcpts, tx->n_rcpts, tx->len, tx->tls,
                        (const char *const *)tx->atts.v, tx->atts.n);
        if (tx->r->accounting)
            accounting_add(tx->r->accounting, tx->user, ACCT_ACCEPTED, NULL, (long long)tx->len);
        snprintf(reply, sizeof reply, "250 2.0.0 Ok: queued as %s", ids);
    } else {
        snprintf(reply, sizeof reply, "451 4.3.0 Could not store the message safely");
    }
    res.reply = reply;
    tx->done(tx->arg, &res);
}

int submit_finish(struct submit_tx *tx, submit_done_fn done, void *arg,
                  struct authz_refusal *ref)
{
    struct relay *r = tx->r;
    const struct config *cfg = r->cfg;
    if (tx->discarding) {
        ref->reason = REJECT_SIZE;
        snprintf(ref->reply, sizeof ref->reply, "552 5.3.4 Message exceeds the size limit");
        return refused(tx, ref);
    }
    const char *why = framing_refusal(tx->buf, tx->len, &ref->reason);
    if (why) {
        snprintf(ref->reply, sizeof ref->reply, "%s", why);
        return refused(tx, ref);
    }
    if (authz_size(tx->cred, cfg, tx->len, ref) < 0 ||
        authz_headers(tx->cred, cfg, tx->buf, tx->len, ref) < 0 ||
        authz_content(cfg, tx->buf, tx->len, ref, &tx->atts) < 0)
        return refused(tx, ref);
    uint64_t id = spool_new_id(r->spool);
    char ids[17];
    spool_id_str(id, ids);
    struct intake_info info = {.hostname = cfg->hostname,
                               .helo = tx->helo,
                               .client_ip = tx->ip,
                               .auth_user = tx->user,
                               .tls_desc = tx->tls,
                               .queue_id = ids,
                               .esmtp = tx->esmtp,
                               .smtputf8 = tx->smtputf8,
                               .now = time(NULL)};
    intake_build(tx->buf, tx->len, &info, &tx->ir);
    char meta[1024];
    int n = snprintf(meta, sizeof meta, "client_ip=%s\nhelo=%s\n", tx->ip, tx->helo);
    if (tx->user)
        n += snprintf(meta + n, sizeof meta - (size_t)n, "auth=%s\n", tx->user);
    snprintf(meta + n, sizeof meta - (size_t)n, "message_id=%s\n", tx->ir.message_id);
    struct spool_envelope env = {.sender = tx->from.addr,
                                 .rcpts = (const char *const *)tx->rcpts,
                                 .n_rcpts = tx->n_rcpts,
                                 .flags = tx->smtputf8 ? SPOOL_F_SMTPUTF8 : 0,
                                 .received = info.now,
                                 .meta = meta};
    struct iovec iov[4] = {{tx->ir.prepend, tx->ir.prepend_len},
                           {tx->buf, tx->ir.header_end},
                           {tx->ir.append, tx->ir.append_len},
                           {tx->buf + tx->ir.header_end, tx->len - tx->ir.header_end}};
    tx->done = done;
    tx->arg = arg;
    int rc = spool_put(r->spool, id, &env, iov, 4, commit_done, tx);
    if (rc < 0) {
        ref->reason = REJECT_STORAGE;
        snprintf(ref->reply, sizeof ref->reply, "%s",
                 rc == -ENOSPC ? "452 4.3.1 Insufficient system storage, try again later"
                               : "451 4.3.0 Local error while storing the message");
        return refused(tx, ref);
    }
    return SUBMIT_OK;
}

void submit_free(struct submit_tx *tx)
{
    if (!tx)
        return;
    free(tx->ip);
    free(tx->helo);
    free(tx->user);
    free(tx->tls);
    for (size_t i = 0; i < tx->n_rcpts; i++)
        free(tx->rcpts[i]);
    free(tx->rcpts);
    free(tx->buf);
    authz_attachments_free(&tx->atts);
    free(tx);
}
