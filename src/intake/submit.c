/* The submission transaction (submit.h): envelope rules, content under the
 * in-flight budget with the DKIM body hash streaming, the content rules,
 * the intake fields, DKIM-Signature, and the spool. */
#include "intake/submit.h"

#include "core/config.h"
#include "core/events.h"
#include "core/log.h"
#include "core/relay.h"
#include "intake/msgbuf.h"
#include "intake/signing.h"
#include "mail/intake.h"
#include "mailauth/dkim.h"
#include "policy/accounting.h"
#include "policy/policy.h"
#include "policy/ratelimit.h"
#include "spool/spool.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* RFC 5322 2.1.1: a line is at most 998 octets without its CRLF. */
#define TEXT_LINE_MAX 998

struct submit_tx {
    struct relay *r;
    /* origin (copied) */
    char door[16];
    char ip[64];
    char helo[256];
    char auth_user[128];
    char auth_method[32];
    char tls_desc[128];
    bool authed, tls, esmtp;
    const struct cred *cred; /* borrowed from the door */

    /* envelope */
    bool have_mail;
    struct quota_ticket quota; /* given back unless the message is accepted */
    struct smtp_path from;
    struct smtp_mail_params mp;
    char **rcpts;
    size_t n_rcpts, cap_rcpts;

    /* content */
    struct msgbuf msg;
    size_t total; /* octets seen, kept or not */
    long long size_limit;
    bool too_big, over_budget;
    bool have_framing;
    struct submit_framing framing;
    struct authz_attachments atts;

    /* DKIM: the body hash runs while the content streams in */
    bool hdr_found;
    size_t hdr_scan, body_start, dkim_hdr_len;
    struct dkim_sign_state *dkim;
    struct signing *dkim_set;

    /* what the spool borrows until the commit completes */
    struct intake_result ir;
    char *sigs;
    bool committing;
    submit_done_fn done;
    void *done_arg;
};

static void copy(char *dst, size_t len, const char *src)
{
    snprintf(dst, len, "%s", src ? src : "");
}

/* ---- reporting ---- */

static void account(struct submit_tx *tx, enum acct_event ev, const char *reason, long long bytes)
{
    if (tx->r->accounting)
        accounting_add(tx->r->accounting, tx->authed ? tx->auth_user : NULL, ev, reason, bytes);
}

/* Every refusal is reported once, here: one event, one counter, one
 * accounting row; the door only answers it. */
static int refused(struct submit_tx *tx, struct authz_refusal *ref)
{
    events_reject(tx->r, tx->ip, tx->authed ? tx->auth_user : NULL, ref->reason, ref->reply);
    account(tx, ACCT_REJECTED, reject_reason_name(ref->reason), 0);
    return SUBMIT_EREFUSED;
}

__attribute__((format(printf, 4, 5))) static int refuse(struct submit_tx *tx,
                                                        struct authz_refusal *ref,
                                                        enum reject_reason why, const char *fmt,
                                                        ...)
{
    ref->reason = why;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ref->reply, sizeof ref->reply, fmt, ap);
    va_end(ap);
    return refused(tx, ref);
}

/* ---- life ---- */

static void set_origin(struct submit_tx *tx, const struct submit_origin *o)
{
    copy(tx->door, sizeof tx->door, o->door);
    copy(tx->ip, sizeof tx->ip, o->client_ip);
    copy(tx->helo, sizeof tx->helo, o->helo);
    copy(tx->auth_user, sizeof tx->auth_user, o->auth_user);
    copy(tx->auth_method, sizeof tx->auth_method, o->auth_method);
    copy(tx->tls_desc, sizeof tx->tls_desc, o->tls_desc);
    tx->authed = o->auth_user != NULL;
    tx->tls = o->tls_desc != NULL;
    tx->esmtp = o->esmtp;
    tx->cred = o->cred;
}

struct submit_tx *submit_begin(struct relay *r, const struct submit_origin *o)
{
    struct submit_tx *tx = calloc(1, sizeof *tx);
    if (!tx)
        return NULL;
    tx->r = r;
    set_origin(tx, o);
    tx->size_limit = authz_size_limit(tx->cred, r->cfg);
    return tx;
}

static void dkim_drop(struct submit_tx *tx)
{
    if (tx->dkim)
        dkim_sign_abort(tx->dkim);
    tx->dkim = NULL;
    signing_free(tx->dkim_set);
    tx->dkim_set = NULL;
}

void submit_free(struct submit_tx *tx)
{
    if (!tx)
        return;
    if (tx->committing) {
        /* the spool still holds pointers into this transaction */
        log_event(LOG_ERROR, "intake.free_while_committing", "door", "%s", tx->door, NULL);
        abort();
    }
    /* a transaction that ends without acceptance (RSET, a refusal, a lost
     * connection, a failed commit) costs no quota */
    accounting_quota_give_back(tx->r->accounting, &tx->quota);
    dkim_drop(tx);
    free(tx->sigs);
    for (size_t i = 0; i < tx->n_rcpts; i++)
        free(tx->rcpts[i]);
    free(tx->rcpts);
    msgbuf_release(&tx->msg, &tx->r->inflight_bytes);
    authz_attachments_free(&tx->atts);
    free(tx);
}

/* ---- envelope ---- */

int submit_mail(struct submit_tx *tx, const struct smtp_path *from,
                const struct smtp_mail_params *mp, struct authz_refusal *ref)
{
    const struct config *cfg = tx->r->cfg;
    tx->have_mail = false;
    if (mp->size > cfg->max_message_size)
        return refuse(tx, ref, REJECT_SIZE,
                      "552 5.3.4 Message size %lld exceeds the limit of %lld bytes", mp->size,
                      cfg->max_message_size);
    if (mp->size > cfg->max_inflight_bytes - tx->r->inflight_bytes)
        /* RFC 1870 6.1: the declared size does not fit in memory now */
        return refuse(tx, ref, REJECT_MEMORY,
                      "452 4.3.1 Insufficient system storage: no room for a message of that "
                      "size now, try again later");
    if (authz_mail(tx->cred, cfg, from, mp->size, ref) < 0 ||
        authz_rate(tx->r->ratelimit, tx->cred, tx->ip, cfg->rate_per_ip, policy_now_ms(), ref) <
            0 ||
        authz_shared_rate(tx->r->accounting, tx->cred, time(NULL), ref) < 0 ||
        authz_quota_reserve(tx->r->accounting, tx->cred, time(NULL), &tx->quota, ref) < 0)
        return refused(tx, ref);
    tx->from = *from;
    tx->mp = *mp;
    tx->have_mail = true;
    return SUBMIT_OK;
}

int submit_rcpt(struct submit_tx *tx, const struct smtp_path *rcpt, struct authz_refusal *ref)
{
    const struct config *cfg = tx->r->cfg;
    if (authz_rcpt(tx->cred, cfg, rcpt, ref) < 0)
        return refused(tx, ref);
    if (tx->n_rcpts >= (size_t)cfg->max_recipients)
        /* RFC 5321 4.5.3.1.10: 452 for too many recipients */
        return refuse(tx, ref, REJECT_RECIPIENTS,
                      "452 4.5.3 Too many recipients (limit %d per message)", cfg->max_recipients);
    if (tx->n_rcpts == tx->cap_rcpts) {
        size_t nc = tx->cap_rcpts ? tx->cap_rcpts * 2 : 8;
        char **nv = realloc(tx->rcpts, nc * sizeof *nv);
        if (!nv)
            return SUBMIT_ENOMEM;
        tx->rcpts = nv;
        tx->cap_rcpts = nc;
    }
    char *a = strdup(rcpt->addr);
    if (!a)
        return SUBMIT_ENOMEM;
    tx->rcpts[tx->n_rcpts++] = a;
    return SUBMIT_OK;
}

size_t submit_rcpt_count(const struct submit_tx *tx)
{
    return tx->n_rcpts;
}

/* ---- content ---- */

bool submit_discarding(const struct submit_tx *tx)
{
    return tx->too_big || tx->over_budget;
}

size_t submit_content_len(const struct submit_tx *tx)
{
    return tx->total;
}

static void budget_refusal(struct authz_refusal *ref)
{
    ref->reason = REJECT_MEMORY;
    snprintf(ref->reply, sizeof ref->reply,
             "452 4.3.1 Insufficient system storage: too many messages in progress, try again "
             "later");
}

bool submit_early_refusal(const struct submit_tx *tx, struct authz_refusal *ref)
{
    if (!tx->over_budget)
        return false;
    budget_refusal(ref);
    return true;
}

/* The budget for messages in memory ran out while this one streamed in:
 * what it held goes back at once, the rest is counted and dropped, and the
 * transaction ends with 452 (try again later). */
static void out_of_budget(struct submit_tx *tx)
{
    tx->over_budget = true;
    msgbuf_release(&tx->msg, &tx->r->inflight_bytes);
    dkim_drop(tx);
    log_event(LOG_WARN, "smtp.memory_budget", "client_ip", "%s", tx->ip, "inflight_bytes", "#%lld",
              tx->r->inflight_bytes, NULL);
}

char *submit_space(struct submit_tx *tx, size_t n)
{
    if (submit_discarding(tx) || n == 0)
        return NULL; /* nothing to place (and no buffer to point into yet) */
    enum msgbuf_status ms =
        msgbuf_reserve(&tx->msg, n, &tx->r->inflight_bytes, tx->r->cfg->max_inflight_bytes);
    if (ms == MSGBUF_OVER_BUDGET)
        out_of_budget(tx);
    else if (ms == MSGBUF_NOMEM)
        tx->too_big = true;
    if (ms != MSGBUF_OK) {
        tx->msg.len = 0;
        return NULL;
    }
    return tx->msg.p + tx->msg.len;
}

/* After new content landed at [from, len): finds the end of the header
 * block once, picks the signers for the From domain, feeds the body hash. */
static void dkim_stream(struct submit_tx *tx, size_t from)
{
    if (submit_discarding(tx)) {
        dkim_drop(tx);
        return;
    }
    if (tx->hdr_found) {
        if (tx->dkim && tx->msg.len > from)
            dkim_sign_update(tx->dkim, tx->msg.p + from, tx->msg.len - from);
        return;
    }
    size_t start = tx->hdr_scan > 3 ? tx->hdr_scan - 3 : 0;
    const char *p =
        tx->msg.len > start ? memmem(tx->msg.p + start, tx->msg.len - start, "\r\n\r\n", 4) : NULL;
    if (!p) {
        tx->hdr_scan = tx->msg.len;
        return;
    }
    size_t pos = (size_t)(p - tx->msg.p);
    tx->hdr_found = true;
    tx->body_start = pos + 4;
    struct signing *set = tx->r->signing;
    char dom[256];
    if (!signing_count(set) || signing_from_domain(tx->msg.p, pos + 2, dom, sizeof dom) < 0)
        return;
    struct dkim_signer *sg[8];
    size_t n = signing_for_domain(set, dom, sg, 8);
    if (!n)
        return;
    tx->dkim_set = signing_ref(set);
    tx->dkim = dkim_sign_begin(sg, n);
    tx->dkim_hdr_len = pos + 2;
    if (tx->dkim && tx->msg.len > tx->body_start)
        dkim_sign_update(tx->dkim, tx->msg.p + tx->body_start, tx->msg.len - tx->body_start);
}

void submit_wrote(struct submit_tx *tx, size_t n)
{
    size_t before = tx->msg.len;
    bool kept = !submit_discarding(tx);
    if (kept)
        tx->msg.len += n;
    tx->total += n;
    if ((long long)tx->total > tx->size_limit)
        tx->too_big = true;
    if ((kept && n) || tx->too_big)
        dkim_stream(tx, before);
}

bool submit_feed(struct submit_tx *tx, const void *p, size_t n)
{
    char *dst = submit_space(tx, n);
    if (dst)
        memcpy(dst, p, n);
    submit_wrote(tx, n);
    return !submit_discarding(tx);
}

void submit_set_framing(struct submit_tx *tx, const struct submit_framing *f)
{
    tx->framing = *f;
    tx->have_framing = true;
}

/* What a door without its own decoder gets: the same facts, read off the
 * content (CRLF line ends expected). */
static void scan_framing(const char *p, size_t len, struct submit_framing *f)
{
    memset(f, 0, sizeof *f);
    size_t line = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c == '\r') {
            if (i + 1 < len && p[i + 1] == '\n') {
                if (line > f->longest_line)
                    f->longest_line = line;
                line = 0;
                i++;
                continue;
            }
            f->bare_cr = true;
        } else if (c == '\n') {
            f->bare_lf = true;
        } else if (c == 0) {
            f->nul_byte = true;
        } else if (c & 0x80) {
            f->eight_bit = true;
        }
        line++;
    }
    if (line > f->longest_line)
        f->longest_line = line;
}

/* Why the message itself is refused, decided before anything is spooled:
 * framing first (smuggling, size, syntax), then the header rules of the
 * credential and the content policy. Fills ref and returns true. */
static bool content_refused(struct submit_tx *tx, struct authz_refusal *ref)
{
    const struct config *cfg = tx->r->cfg;
    const struct submit_framing *f = &tx->framing;
    const char *syntax = NULL;
    if (f->bare_lf || f->bare_cr) {
        /* the SMTP smuggling defence: a lone CR or LF could hide a second
         * end-of-data for a downstream server that reads lines differently */
        const char *what = f->bare_lf ? "LF" : "CR";
        ref->reason = REJECT_SMUGGLING;
        snprintf(ref->reply, sizeof ref->reply,
                 "550 5.5.2 Message refused: bare %s in message data; lines must end with "
                 "CRLF (RFC 5321 2.3.8)",
                 what);
        char detail[64];
        snprintf(detail, sizeof detail, "bare %s in message data", what);
        events_security(tx->r, tx->ip, "bare_line_ending", detail);
        return true;
    }
    if (tx->over_budget) {
        budget_refusal(ref);
        return true;
    }
    if (tx->too_big) {
        ref->reason = REJECT_SIZE;
        if (tx->size_limit < cfg->max_message_size)
            snprintf(ref->reply, sizeof ref->reply,
                     "552 5.3.4 Message size exceeds the credential's limit of %lld bytes",
                     tx->size_limit);
        else
            snprintf(ref->reply, sizeof ref->reply, "552 5.3.4 Message exceeds the size limit");
        return true;
    }
    if (f->nul_byte)
        syntax = "554 5.6.0 Message refused: NUL octet in message data";
    else if (f->longest_line > TEXT_LINE_MAX)
        syntax = "554 5.6.0 Message refused: a line is longer than 998 octets (RFC 5322 2.1.1); "
                 "encode long lines with quoted-printable or base64";
    else if (tx->msg.len == 0)
        syntax = "554 5.6.0 Message refused: empty message";
    if (syntax) {
        ref->reason = REJECT_SYNTAX;
        snprintf(ref->reply, sizeof ref->reply, "%s", syntax);
        return true;
    }
    return authz_size(tx->cred, cfg, tx->msg.len, ref) < 0 ||
           authz_headers(tx->cred, cfg, tx->msg.p, tx->msg.len, ref) < 0 ||
           authz_content(cfg, tx->msg.p, tx->msg.len, ref, &tx->atts) < 0;
}

static void build_meta(const struct submit_tx *tx, const char *msgid, char *meta, size_t len)
{
    int n = snprintf(meta, len, "client_ip=%s\nhelo=%s\n", tx->ip, tx->helo);
    if (tx->authed)
        n += snprintf(meta + n, len - (size_t)n, "auth=%s\n", tx->auth_user);
    if (tx->tls)
        n += snprintf(meta + n, len - (size_t)n, "tls=%s\n", tx->tls_desc);
    if (tx->mp.envid[0])
        n += snprintf(meta + n, len - (size_t)n, "envid=%s\n", tx->mp.envid);
    if (strcmp(tx->door, "smtp") != 0)
        n += snprintf(meta + n, len - (size_t)n, "door=%s\n", tx->door);
    snprintf(meta + n, len - (size_t)n, "message_id=%s\n", msgid);
    for (char *p = meta; *p; p++)
        if ((unsigned char)*p < 0x20 && *p != '\n')
            *p = ' ';
}

/* DKIM-Signature fields for the message as it will be spooled; NULL
 * without signers. -1: signing failed and the message must wait. */
static int sign(struct submit_tx *tx, time_t now, char **sigs)
{
    *sigs = NULL;
    if (!tx->dkim)
        return 0;
    const struct intake_result *ir = &tx->ir;
    int sr = -1;
    if (ir->header_end == tx->dkim_hdr_len) {
        /* the signed header block includes the fields intake adds */
        char *hdr = malloc(ir->header_end + ir->append_len + 1);
        if (hdr) {
            memcpy(hdr, tx->msg.p, ir->header_end);
            memcpy(hdr + ir->header_end, ir->append, ir->append_len);
            sr = dkim_sign_finish(tx->dkim, hdr, ir->header_end + ir->append_len, now, sigs);
            free(hdr);
        } else {
            dkim_sign_abort(tx->dkim);
        }
    } else {
        dkim_sign_abort(tx->dkim);
    }
    tx->dkim = NULL;
    if (sr >= 0)
        return 0;
    free(*sigs);
    *sigs = NULL;
    log_event(LOG_ERROR, "dkim.sign_failed", "id", "%s", ir->message_id, "error", "%s",
              sr == -1 ? "header block not understood" : dkim_strerror(sr), NULL);
    return strcmp(tx->r->cfg->dkim_on_failure, "unsigned") == 0 ? 0 : -1;
}

static void committed(void *arg, int err, uint64_t id)
{
    struct submit_tx *tx = arg;
    tx->committing = false;
    struct submit_result res = {.err = err, .id = id, .message_id = tx->ir.message_id};
    spool_id_str(id, res.id_str);
    struct authz_refusal ref;
    if (!err) {
        /* accepted even when the client left before the answer: it will
         * be delivered, so it is counted */
        if (tx->r->hooks.message_durable)
            tx->r->hooks.message_durable(tx->r, id);
        events_accepted(tx->r, res.id_str, tx->ir.message_id, tx->ip,
                        tx->authed ? tx->auth_user : NULL, tx->from.addr,
                        (const char *const *)tx->rcpts, tx->n_rcpts, tx->msg.len,
                        tx->tls ? tx->tls_desc : NULL, (const char *const *)tx->atts.v, tx->atts.n);
        account(tx, ACCT_ACCEPTED, NULL, (long long)tx->msg.len);
        tx->quota.held = false; /* spent */
        snprintf(ref.reply, sizeof ref.reply, "250 2.0.0 Ok: queued as %s", res.id_str);
    } else {
        if (err == -ENOSPC || err == -EDQUOT)
            refuse(tx, &ref, REJECT_STORAGE,
                   "452 4.3.1 Insufficient system storage, try again later");
        else
            refuse(tx, &ref, REJECT_STORAGE,
                   "451 4.3.0 Could not store the message safely, try again later");
        log_event(LOG_ERROR,
                  err == -ENOSPC || err == -EDQUOT ? "spool.write_failed" : "spool.commit_failed",
                  "id", "%s", res.id_str, "error", "%s", strerror(-err), NULL);
    }
    res.reply = ref.reply;
    tx->done(tx->done_arg, &res);
}

int submit_finish(struct submit_tx *tx, submit_done_fn done, void *arg, struct authz_refusal *ref)
{
    const struct config *cfg = tx->r->cfg;
    if (!tx->have_mail || !tx->n_rcpts)
        return refuse(tx, ref, REJECT_RECIPIENTS, "554 5.5.1 No valid recipients");
    if (!tx->have_framing)
        scan_framing(tx->msg.p, tx->msg.len, &tx->framing);
    if (content_refused(tx, ref))
        return refused(tx, ref);

    struct spool *sp = tx->r->spool;
    uint64_t id = spool_new_id(sp);
    char ids[17];
    spool_id_str(id, ids);
    struct intake_info info = {.hostname = cfg->hostname,
                               .helo = tx->helo,
                               .client_ip = tx->ip,
                               .auth_user = tx->authed ? tx->auth_user : NULL,
                               .tls_desc = tx->tls ? tx->tls_desc : NULL,
                               .queue_id = ids,
                               .esmtp = tx->esmtp,
                               .smtputf8 = tx->mp.smtputf8,
                               .now = time(NULL)};
    struct intake_result *ir = &tx->ir;
    intake_build(tx->msg.p, tx->msg.len, &info, ir);
    char *sigs;
    if (sign(tx, info.now, &sigs) < 0)
        return refuse(tx, ref, REJECT_SIGNING,
                      "451 4.3.0 The message could not be DKIM-signed; try again later");
    char meta[1024];
    build_meta(tx, ir->message_id, meta, sizeof meta);
    struct spool_envelope env = {.sender = tx->from.addr,
                                 .rcpts = (const char *const *)tx->rcpts,
                                 .n_rcpts = tx->n_rcpts,
                                 .flags = (tx->mp.smtputf8 ? SPOOL_F_SMTPUTF8 : 0) |
                                          (tx->framing.eight_bit ? SPOOL_F_8BIT : 0),
                                 .received = info.now,
                                 .meta = meta};
    struct iovec iov[5] = {{sigs ? sigs : "", sigs ? strlen(sigs) : 0},
                           {ir->prepend, ir->prepend_len},
                           {tx->msg.p, ir->header_end},
                           {ir->append, ir->append_len},
                           {tx->msg.p + ir->header_end, tx->msg.len - ir->header_end}};
    tx->done = done;
    tx->done_arg = arg;
    int r = spool_put(sp, id, &env, iov, 5, committed, tx);
    tx->sigs = sigs; /* freed with the transaction, after the commit */
    if (r < 0) {
        log_event(LOG_ERROR, "spool.write_failed", "client_ip", "%s", tx->ip, "error", "%s",
                  strerror(-r), NULL);
        if (r == -ENOSPC || r == -EDQUOT)
            return refuse(tx, ref, REJECT_STORAGE,
                          "452 4.3.1 Insufficient system storage, try again later");
        if (r == -EFBIG)
            return refuse(tx, ref, REJECT_SIZE, "552 5.3.4 Message too big for the spool");
        return refuse(tx, ref, REJECT_STORAGE,
                      "451 4.3.0 Local error while storing the message, try again later");
    }
    tx->committing = true;
    return SUBMIT_OK;
}
