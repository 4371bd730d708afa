/* Message content inside a submission session: DATA and BDAT (RFC 5321
 * 4.1.1.4, RFC 3030) through the smuggling-safe decoder into a buffer under
 * the in-flight budget, DKIM body hashing while it streams, then the checks,
 * intake fields and the spool; 250 only once the spool says durable. */
#include "smtp/session_int.h"

#include "core/config.h"
#include "core/log.h"
#include "core/relay.h"
#include "mailauth/dkim.h"
#include "policy/policy.h"
#include "queue/queue.h"
#include "smtp/signing.h"
#include "spool/spool.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

static void content_done(struct session *s);

static enum msgbuf_status msg_reserve(struct session *s, size_t extra)
{
    return msgbuf_reserve(&s->msg, extra, &s->r->inflight_bytes, s->r->cfg->max_inflight_bytes);
}

/* The budget for messages in memory ran out while this one streamed in:
 * what it held goes back at once, the rest is read and dropped, and the
 * transaction ends with 452 (RFC 5321 4.5.3.1.9 style: try again later). */
static void out_of_budget(struct session *s)
{
    s->over_budget = true;
    msgbuf_release(&s->msg, &s->r->inflight_bytes);
    session_dkim_drop(s);
    log_event(LOG_WARN, "smtp.memory_budget", "client_ip", "%s", s->ip, "inflight_bytes", "#%lld",
              s->r->inflight_bytes, NULL);
}

static void budget_refusal(struct authz_refusal *ref)
{
    ref->reason = REJECT_MEMORY;
    snprintf(ref->reply, sizeof ref->reply,
             "452 4.3.1 Insufficient system storage: too many messages in progress, try again "
             "later");
}

static void begin_content(struct session *s, bool dot_mode)
{
    smtp_data_decoder_init(&s->dec, dot_mode);
    s->msg.len = 0;
    s->data_total = 0;
    s->too_big = false;
    session_set_timeout(s, s->r->cfg->data_timeout);
    s->clock.content_ms = session_now_ms();
    s->clock.content_bytes = 0;
}

void session_cmd_data(struct session *s, const struct smtp_command *c)
{
    if (c->arg_len) {
        session_command_error(s, "501 5.5.4 DATA takes no arguments");
        return;
    }
    if (s->mp.body == SMTP_BODY_BINARYMIME) {
        session_reply(s, "503 5.5.1 BINARYMIME requires BDAT");
        return;
    }
    begin_content(s, true);
    s->st = ST_DATA;
    session_reply(s, "354 End data with <CR><LF>.<CR><LF>");
    session_deadline_arm(s);
}

void session_cmd_bdat(struct session *s, const struct smtp_command *c)
{
    char arg[64];
    if (c->arg_len == 0 || c->arg_len >= sizeof arg) {
        session_command_error(s, "501 5.5.4 Syntax: BDAT size [LAST]");
        return;
    }
    memcpy(arg, c->arg, c->arg_len);
    arg[c->arg_len] = 0;
    char *end;
    errno = 0;
    unsigned long long size = strtoull(arg, &end, 10);
    bool last = false;
    if (end == arg || errno || arg[0] == '-') {
        session_command_error(s, "501 5.5.4 Syntax: BDAT size [LAST]");
        return;
    }
    while (*end == ' ')
        end++;
    if (strcasecmp(end, "LAST") == 0)
        last = true;
    else if (*end) {
        session_command_error(s, "501 5.5.4 Syntax: BDAT size [LAST]");
        return;
    }
    if (!s->bdat_used) {
        begin_content(s, false);
        s->bdat_used = true;
    }
    s->bdat_left = size;
    s->bdat_last = last;
    s->st = ST_BDAT;
    session_set_timeout(s, s->r->cfg->data_timeout);
    session_deadline_arm(s);
}

/* ---- end of content: checks, intake, spool ---- */

static void commit_done(void *arg, int err, uint64_t id)
{
    struct session *s = arg;
    s->busy--;
    char ids[17];
    spool_id_str(id, ids);
    if (!err) {
        /* accepted even when the client left before the 250: it will be
         * delivered, so it is counted */
        queue_add(s->r->queue, id);
        events_accepted(s->r, ids, s->ir.message_id, s->ip, s->authed ? s->auth_user : NULL,
                        s->from.addr, (const char *const *)s->rcpts, s->n_rcpts, s->msg.len,
                        s->tls ? s->tls_desc : NULL, (const char *const *)s->atts.v, s->atts.n);
        session_account(s, ACCT_ACCEPTED, NULL, (long long)s->msg.len);
    }
    if (s->dead) {
        session_close(s);
        return;
    }
    if (err == -ENOSPC || err == -EDQUOT) {
        session_refused(s, REJECT_STORAGE,
                        "452 4.3.1 Insufficient system storage, try again later");
        log_event(LOG_ERROR, "spool.write_failed", "id", "%s", ids, "error", "%s", strerror(-err),
                  NULL);
    } else if (err) {
        session_refused(s, REJECT_STORAGE,
                        "451 4.3.0 Could not store the message safely, try again later");
        log_event(LOG_ERROR, "spool.commit_failed", "id", "%s", ids, "error", "%s", strerror(-err),
                  NULL);
    } else {
        session_reply(s, "250 2.0.0 Ok: queued as %s", ids);
    }
    session_after_transaction(s);
    session_set_timeout(s, s->r->cfg->command_timeout);
    session_process_input(s);
}

static void build_meta(struct session *s, const char *msgid, char *meta, size_t len)
{
    int n = snprintf(meta, len, "client_ip=%s\nhelo=%s\n", s->ip, s->helo);
    if (s->authed)
        n += snprintf(meta + n, len - (size_t)n, "auth=%s\n", s->auth_user);
    if (s->tls)
        n += snprintf(meta + n, len - (size_t)n, "tls=%s\n", s->tls_desc);
    if (s->mp.envid[0])
        n += snprintf(meta + n, len - (size_t)n, "envid=%s\n", s->mp.envid);
    snprintf(meta + n, len - (size_t)n, "message_id=%s\n", msgid);
    for (char *p = meta; *p; p++)
        if ((unsigned char)*p < 0x20 && *p != '\n')
            *p = ' ';
}

/* Why the message itself is refused, decided before anything is spooled:
 * framing first (smuggling, size, syntax), then the header rules of the
 * credential and the content policy. Returns true with ref filled. */
static bool content_refused(struct session *s, struct authz_refusal *ref)
{
    const struct config *cfg = s->r->cfg;
    const struct cred *c = session_sender_cred(s);
    const char *syntax = NULL;
    if (s->dec.bare_lf || s->dec.bare_cr) {
        /* the SMTP smuggling defence: a lone CR or LF could hide a second
         * end-of-data for a downstream server that reads lines differently */
        const char *what = s->dec.bare_lf ? "LF" : "CR";
        ref->reason = REJECT_SMUGGLING;
        snprintf(ref->reply, sizeof ref->reply,
                 "550 5.5.2 Message refused: bare %s in message data; lines must end with "
                 "CRLF (RFC 5321 2.3.8)",
                 what);
        char detail[64];
        snprintf(detail, sizeof detail, "bare %s in message data", what);
        events_security(s->r, s->ip, "bare_line_ending", detail);
        return true;
    }
    if (s->over_budget) {
        budget_refusal(ref);
        return true;
    }
    if (s->too_big) {
        ref->reason = REJECT_SIZE;
        if (s->size_limit < cfg->max_message_size)
            snprintf(ref->reply, sizeof ref->reply,
                     "552 5.3.4 Message size exceeds the credential's limit of %lld bytes",
                     s->size_limit);
        else
            snprintf(ref->reply, sizeof ref->reply, "552 5.3.4 Message exceeds the size limit");
        return true;
    }
    if (s->dec.nul_byte)
        syntax = "554 5.6.0 Message refused: NUL octet in message data";
    else if (s->dec.longest_line > SMTP_TEXT_LINE_MAX)
        syntax = "554 5.6.0 Message refused: a line is longer than 998 octets (RFC 5322 2.1.1); "
                 "encode long lines with quoted-printable or base64";
    else if (s->msg.len == 0)
        syntax = "554 5.6.0 Message refused: empty message";
    if (syntax) {
        ref->reason = REJECT_SYNTAX;
        snprintf(ref->reply, sizeof ref->reply, "%s", syntax);
        return true;
    }
    return authz_size(c, cfg, s->msg.len, ref) < 0 ||
           authz_headers(c, cfg, s->msg.p, s->msg.len, ref) < 0 ||
           authz_content(cfg, s->msg.p, s->msg.len, ref, &s->atts) < 0;
}

static void content_done(struct session *s)
{
    const struct config *cfg = s->r->cfg;
    session_set_timeout(s, cfg->command_timeout);
    if (s->bdat_error) {
        s->r->n.rejected++;
        session_reply(s, "%s", s->bdat_error);
        session_after_transaction(s);
        return;
    }
    struct authz_refusal ref;
    if (content_refused(s, &ref)) {
        session_policy_refused(s, &ref);
        session_after_transaction(s);
        return;
    }

    struct spool *sp = s->r->spool;
    uint64_t id = spool_new_id(sp);
    char ids[17];
    spool_id_str(id, ids);
    struct intake_info info = {.hostname = cfg->hostname,
                               .helo = s->helo,
                               .client_ip = s->ip,
                               .auth_user = s->authed ? s->auth_user : NULL,
                               .tls_desc = s->tls ? s->tls_desc : NULL,
                               .queue_id = ids,
                               .esmtp = s->esmtp,
                               .smtputf8 = s->mp.smtputf8,
                               .now = time(NULL)};
    struct intake_result *ir = &s->ir;
    intake_build(s->msg.p, s->msg.len, &info, ir);
    char *sigs = NULL;
    if (s->dkim) {
        int sr = -1;
        if (ir->header_end == s->dkim_hdr_len) {
            /* the signed header block includes the fields intake adds */
            char *hdr = malloc(ir->header_end + ir->append_len + 1);
            if (hdr) {
                memcpy(hdr, s->msg.p, ir->header_end);
                memcpy(hdr + ir->header_end, ir->append, ir->append_len);
                sr = dkim_sign_finish(s->dkim, hdr, ir->header_end + ir->append_len, info.now,
                                      &sigs);
                free(hdr);
            } else {
                dkim_sign_abort(s->dkim);
            }
        } else {
            dkim_sign_abort(s->dkim);
        }
        s->dkim = NULL;
        if (sr < 0) {
            free(sigs);
            sigs = NULL;
            log_event(LOG_ERROR, "dkim.sign_failed", "id", "%s", ids, "error", "%s",
                      sr == -1 ? "header block not understood" : dkim_strerror(sr), NULL);
            if (strcmp(cfg->dkim_on_failure, "unsigned") != 0) {
                session_refused(s, REJECT_SIGNING,
                                "451 4.3.0 The message could not be DKIM-signed; try again later");
                session_after_transaction(s);
                return;
            }
        }
    }
    char meta[1024];
    build_meta(s, ir->message_id, meta, sizeof meta);
    struct spool_envelope env = {.sender = s->from.addr,
                                 .rcpts = (const char *const *)s->rcpts,
                                 .n_rcpts = s->n_rcpts,
                                 .flags = (s->mp.smtputf8 ? SPOOL_F_SMTPUTF8 : 0) |
                                          (s->dec.eight_bit ? SPOOL_F_8BIT : 0),
                                 .received = info.now,
                                 .meta = meta};
    struct iovec iov[5] = {{sigs ? sigs : "", sigs ? strlen(sigs) : 0},
                           {ir->prepend, ir->prepend_len},
                           {s->msg.p, ir->header_end},
                           {ir->append, ir->append_len},
                           {s->msg.p + ir->header_end, s->msg.len - ir->header_end}};
    int r = spool_put(sp, id, &env, iov, 5, commit_done, s);
    s->sigs = sigs; /* freed with the transaction, after the commit */
    if (r < 0) {
        if (r == -ENOSPC || r == -EDQUOT)
            session_refused(s, REJECT_STORAGE,
                            "452 4.3.1 Insufficient system storage, try again later");
        else if (r == -EFBIG)
            session_refused(s, REJECT_SIZE, "552 5.3.4 Message too big for the spool");
        else
            session_refused(s, REJECT_STORAGE,
                            "451 4.3.0 Local error while storing the message, try again later");
        log_event(LOG_ERROR, "spool.write_failed", "client_ip", "%s", s->ip, "error", "%s",
                  strerror(-r), NULL);
        session_after_transaction(s);
        return;
    }

    s->st = ST_COMMIT;
    s->busy++;
}

/* Called after new content landed in msg at [from, len): finds the end of
 * the header block once, picks the signers for the From domain, and feeds
 * the body hash. */
static void dkim_stream(struct session *s, size_t from)
{
    if (s->too_big || s->bdat_error || s->over_budget) {
        session_dkim_drop(s);
        return;
    }
    if (s->hdr_found) {
        if (s->dkim && s->msg.len > from)
            dkim_sign_update(s->dkim, s->msg.p + from, s->msg.len - from);
        return;
    }
    size_t start = s->hdr_scan > 3 ? s->hdr_scan - 3 : 0;
    const char *p =
        s->msg.len > start ? memmem(s->msg.p + start, s->msg.len - start, "\r\n\r\n", 4) : NULL;
    if (!p) {
        s->hdr_scan = s->msg.len;
        return;
    }
    size_t pos = (size_t)(p - s->msg.p);
    s->hdr_found = true;
    s->body_start = pos + 4;
    struct signing *set = s->r->signing;
    char dom[256];
    if (!signing_count(set) || signing_from_domain(s->msg.p, pos + 2, dom, sizeof dom) < 0)
        return;
    struct dkim_signer *sg[8];
    size_t n = signing_for_domain(set, dom, sg, 8);
    if (!n)
        return;
    s->dkim_set = signing_ref(set);
    s->dkim = dkim_sign_begin(sg, n);
    s->dkim_hdr_len = pos + 2;
    if (s->dkim && s->msg.len > s->body_start)
        dkim_sign_update(s->dkim, s->msg.p + s->body_start, s->msg.len - s->body_start);
}

static void bdat_chunk_done(struct session *s)
{
    if (!s->bdat_last) {
        s->st = ST_BDAT_WAIT;
        if (s->over_budget) {
            struct authz_refusal ref;
            budget_refusal(&ref);
            session_policy_refused(s, &ref);
            session_after_transaction(s);
            return;
        }
        if (s->bdat_error) {
            session_reply(s, "%s", s->bdat_error);
            session_after_transaction(s);
            return;
        }
        session_reply(s, "250 2.0.0 %zu octets received", s->data_total);
        return;
    }
    smtp_data_decoder_finish(&s->dec);
    content_done(s);
}

/* Consumes DATA or BDAT content from the input. Returns true when the
 * content ended (and was handled), false when more input is needed. */
bool session_consume_content(struct session *s, struct evbuffer *in)
{
    long long limit = s->size_limit > 0 ? s->size_limit : s->r->cfg->max_message_size;
    while (evbuffer_get_length(in) > 0 || (s->st == ST_BDAT && s->bdat_left == 0)) {
        if (s->st == ST_BDAT && s->bdat_left == 0) {
            bdat_chunk_done(s);
            return true;
        }
        struct evbuffer_iovec v;
        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
            break;
        size_t avail = v.iov_len;
        if (s->st == ST_BDAT && avail > s->bdat_left)
            avail = (size_t)s->bdat_left;
        bool keep = !(s->too_big || s->bdat_error || s->over_budget);
        if (keep) {
            enum msgbuf_status ms = msg_reserve(s, avail);
            if (ms == MSGBUF_OVER_BUDGET)
                out_of_budget(s);
            else if (ms == MSGBUF_NOMEM)
                s->too_big = true;
            keep = ms == MSGBUF_OK;
        }
        if (!keep)
            s->msg.len = 0; /* keep reading, stop keeping */
        size_t out_len = 0;
        bool done = false;
        size_t before = s->msg.len;
        /* content that is not kept is decoded in place, in the input
         * buffer, so refusing a message never needs memory for it */
        char *out = keep ? s->msg.p + s->msg.len : v.iov_base;
        size_t used = smtp_data_decode(&s->dec, v.iov_base, avail, out, &out_len, &done);
        if (keep)
            s->msg.len += out_len;
        s->data_total += out_len;
        s->clock.content_bytes += used;
        if ((long long)s->data_total > limit)
            s->too_big = true;
        if (out_len || s->too_big)
            dkim_stream(s, before);
        evbuffer_drain(in, used);
        if (s->st == ST_BDAT) {
            s->bdat_left -= used;
            continue;
        }
        if (done) {
            content_done(s);
            return true;
        }
    }
    return false;
}
