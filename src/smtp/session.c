/* The SMTP server session. Input is processed line by line (or as DATA/BDAT
 * content) straight from the bufferevent's input buffer; replies accumulate in
 * the output buffer and leave together, which is how pipelined clients get
 * one write per batch. While a check runs off the loop (AUTH) or the spool is
 * committing, input stays buffered and is resumed afterwards. */
#include "smtp/session.h"

#include "core/base64.h"
#include "core/config.h"
#include "core/events.h"
#include "core/log.h"
#include "core/relay.h"
#include "core/worker.h"
#include "net/cidr.h"
#include "net/listener.h"
#include "net/tls.h"
#include "policy/accounting.h"
#include "policy/authz.h"
#include "policy/creds.h"
#include "policy/policy.h"
#include "policy/ratelimit.h"
#include "policy/users.h"
#include "queue/queue.h"
#include "smtp/address.h"
#include "smtp/command.h"
#include "smtp/data.h"
#include "smtp/deadline.h"
#include "smtp/intake.h"
#include "smtp/msgbuf.h"
#include "smtp/sasl.h"
#include "smtp/scram.h"
#include "smtp/signing.h"
#include "mailauth/dkim.h"
#include "spool/spool.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <inttypes.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* RFC 4954 4: AUTH lines may be up to 12288 octets. */
#define AUTH_LINE_MAX 12288

enum session_state {
    ST_INIT,            /* connected; EHLO/HELO not yet seen */
    ST_READY,           /* greeted; no transaction */
    ST_MAIL,            /* MAIL accepted; no recipient yet */
    ST_RCPT,            /* one or more recipients accepted */
    ST_DATA,            /* reading DATA content */
    ST_BDAT,            /* reading a BDAT chunk */
    ST_BDAT_WAIT,       /* between BDAT chunks */
    ST_AUTH_PLAIN,      /* waiting for the PLAIN response */
    ST_AUTH_LOGIN_USER, /* waiting for the LOGIN user name */
    ST_AUTH_LOGIN_PASS, /* waiting for the LOGIN password */
    ST_AUTH_SCRAM,      /* waiting for the next SCRAM-SHA-256 message */
    ST_AUTH_CHECK,      /* password check on a worker, or a failure answered late */
    ST_COMMIT,          /* message appended; waiting until it is durable */
    ST_TLS,             /* TLS handshake in progress */
    ST_CLOSING,         /* final reply flushing; then close */
    ST_COUNT
};

#define V(x) (1u << SMTP_VERB_##x)
#define ALWAYS (V(NOOP) | V(QUIT) | V(RSET) | V(VRFY) | V(EXPN) | V(HELP))

/* Which commands each state accepts (RFC 5321 4.1.4, RFC 3030 2). */
static const unsigned state_allows[ST_COUNT] = {
    [ST_INIT] = ALWAYS | V(EHLO) | V(HELO) | V(STARTTLS),
    [ST_READY] = ALWAYS | V(EHLO) | V(HELO) | V(STARTTLS) | V(AUTH) | V(MAIL),
    [ST_MAIL] = ALWAYS | V(RCPT),
    [ST_RCPT] = ALWAYS | V(RCPT) | V(DATA) | V(BDAT),
    [ST_BDAT_WAIT] = V(NOOP) | V(QUIT) | V(RSET) | V(BDAT),
};

struct session {
    struct relay *r;
    struct bufferevent *bev;
    enum session_state st;
    struct session *prev, *next;
    struct sockaddr_storage peer;
    char ip[INET6_ADDRSTRLEN];
    bool loopback, relay_net, tls, esmtp, authed;
    char tls_desc[128];
    char helo[256];
    char auth_user[SASL_FIELD_MAX + 1]; /* the credential name once authed */
    struct cred *cred;                  /* who logged in; NULL before AUTH and for relay clients */
    uint64_t cred_gen;                  /* credential store generation cred was read at */
    const char *auth_method; /* "PLAIN", "LOGIN", "SCRAM-SHA-256", "api-key", "client-cert" */
    int bad_commands;
    int busy;        /* callbacks outstanding (worker job, spool commit) */
    bool dead;       /* connection gone; free when busy drops to 0 */
    bool discarding; /* dropping an over-long line up to its end */
    bool unauth_slot; /* holds a not-yet-authenticated connection slot */
    struct event *deadline;     /* the next of the deadlines in `clock` */
    struct deadline_clock clock;
    struct users *auth_users;

    /* transaction */
    struct smtp_path from;
    struct smtp_mail_params mp;
    char **rcpts;
    size_t n_rcpts, cap_rcpts;
    struct msgbuf msg;
    struct smtp_data_decoder dec;
    size_t data_total;
    long long size_limit; /* the relay's limit, lowered by the credential's */
    struct authz_attachments atts;
    bool too_big, bdat_used, bdat_last, bdat_failed;
    bool over_budget; /* the in-flight budget ran out: content read, not kept */
    /* DKIM: the body hash runs while the content streams in */
    bool hdr_found;
    size_t hdr_scan, body_start, dkim_hdr_len;
    struct dkim_sign_state *dkim;
    struct signing *dkim_set;
    /* what the spool borrows until the commit completes */
    struct intake_result ir;
    char *sigs;
    const char *bdat_error; /* reply for a BDAT chunk that is read but refused */
    uint64_t bdat_left;

    /* AUTH exchange */
    char login_user[SASL_FIELD_MAX + 1];
    char check_pass[SASL_FIELD_MAX + 1];
    const char *check_mech;   /* worker input: "PLAIN" or "LOGIN" */
    struct cred *check_cred;  /* worker result: the credential, NULL on failure */
    const char *check_method; /* worker result: the method that proved it */
    uint64_t check_gen;
    struct scram_server *scram;
    char line[AUTH_LINE_MAX + 2];
};

static void process_input(struct session *s);
static void session_close(struct session *s);

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- output ---- */

__attribute__((format(printf, 2, 0))) static void vreply(struct session *s, const char *fmt,
                                                          va_list ap)
{
    if (s->dead)
        return;
    /* the client's next command line is due from its last reply */
    s->clock.line_ms = mono_ms();
    struct evbuffer *out = bufferevent_get_output(s->bev);
    evbuffer_add_vprintf(out, fmt, ap);
    evbuffer_add(out, "\r\n", 2);
}

__attribute__((format(printf, 2, 3))) static void reply(struct session *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vreply(s, fmt, ap);
    va_end(ap);
}

static void close_when_flushed(struct session *s);

static void on_write(struct bufferevent *bev, void *arg)
{
    struct session *s = arg;
    /* the TLS bufferevent runs this callback deferred: a reply queued since
     * then may still be waiting, so look before closing */
    if (s->st != ST_CLOSING || evbuffer_get_length(bufferevent_get_output(bev)) > 0)
        return;
    struct bufferevent *under = bufferevent_get_underlying(bev);
    if (under && evbuffer_get_length(bufferevent_get_output(under)) > 0) {
        close_when_flushed(s); /* the TLS filter handed it on; wait for the socket */
        return;
    }
    session_close(s);
}

static void on_flush_timer(evutil_socket_t fd, short what, void *arg)
{
    struct session *s = arg;
    (void)fd;
    (void)what;
    s->busy--;
    if (s->dead)
        session_close(s);
    else
        on_write(s->bev, s);
}

static void close_when_flushed(struct session *s)
{
    s->st = ST_CLOSING;
    bufferevent_disable(s->bev, EV_READ);
    struct bufferevent *under = bufferevent_get_underlying(s->bev);
    if (evbuffer_get_length(bufferevent_get_output(s->bev)) == 0 &&
        (!under || evbuffer_get_length(bufferevent_get_output(under)) == 0)) {
        session_close(s);
        return;
    }
    if (under && evbuffer_get_length(bufferevent_get_output(s->bev)) == 0) {
        /* nothing tells us when the socket under a TLS filter drained: poll */
        struct timeval tv = {0, 10000};
        s->busy++;
        event_base_once(s->r->base, -1, EV_TIMEOUT, on_flush_timer, s, &tv);
    }
}

/* ---- transaction ---- */

static void dkim_drop(struct session *s)
{
    if (s->dkim)
        dkim_sign_abort(s->dkim);
    s->dkim = NULL;
    signing_free(s->dkim_set);
    s->dkim_set = NULL;
}

static void transaction_reset(struct session *s)
{
    dkim_drop(s);
    free(s->sigs);
    s->sigs = NULL;
    s->hdr_found = false;
    s->hdr_scan = s->body_start = s->dkim_hdr_len = 0;
    for (size_t i = 0; i < s->n_rcpts; i++)
        free(s->rcpts[i]);
    s->n_rcpts = 0;
    memset(&s->from, 0, sizeof s->from);
    memset(&s->mp, 0, sizeof s->mp);
    s->msg.len = 0;
    /* the message is spooled or dropped: its memory goes back to the
     * in-flight budget; only the first small buffer is kept for reuse */
    if (s->msg.cap > MSGBUF_INITIAL)
        msgbuf_release(&s->msg, &s->r->inflight_bytes);
    s->data_total = 0;
    s->clock.txn_ms = 0;
    s->over_budget = false;
    s->size_limit = s->r->cfg->max_message_size;
    authz_attachments_free(&s->atts);
    s->too_big = s->bdat_used = s->bdat_last = s->bdat_failed = false;
    s->bdat_error = NULL;
    s->bdat_left = 0;
}

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
    dkim_drop(s);
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

static void after_transaction(struct session *s)
{
    transaction_reset(s);
    s->st = s->helo[0] ? ST_READY : ST_INIT;
    if (s->r->draining) {
        reply(s, "421 4.3.2 %s Service shutting down, closing connection", s->r->cfg->hostname);
        close_when_flushed(s);
    }
}

/* ---- helpers ---- */

static bool auth_offered(const struct session *s)
{
    return s->tls || (s->loopback && s->r->cfg->allow_plaintext_loopback);
}

static bool auth_waiting(enum session_state st)
{
    return st == ST_AUTH_PLAIN || st == ST_AUTH_LOGIN_USER || st == ST_AUTH_LOGIN_PASS ||
           st == ST_AUTH_SCRAM;
}

/* The credential a policy check applies to: NULL for a relay-network
 * client that did not authenticate. */
static const struct cred *sender_cred(const struct session *s)
{
    return s->authed ? s->cred : NULL;
}

static void account(struct session *s, enum acct_event ev, const char *reason, long long bytes)
{
    if (s->r->accounting)
        accounting_add(s->r->accounting, s->authed ? s->auth_user : NULL, ev, reason, bytes);
}

/* Sends a refusal and reports it: one event, one counter, one accounting
 * row per refused command or message. */
static void refused(struct session *s, enum reject_reason why, const char *line)
{
    reply(s, "%s", line);
    events_reject(s->r, s->ip, s->authed ? s->auth_user : NULL, why, line);
    account(s, ACCT_REJECTED, reject_reason_name(why), 0);
}

static void policy_refused(struct session *s, const struct authz_refusal *ref)
{
    refused(s, ref->reason, ref->reply);
}

static void logout(struct session *s)
{
    s->authed = false;
    creds_free_cred(s->cred);
    s->cred = NULL;
    s->auth_user[0] = 0;
    s->auth_method = NULL;
}

/* Counts a rejected command. The one that reaches max_bad_commands is
 * answered with 421 alone (one reply per command, RFC 5321 4.2) and the
 * session closes: returns true, and the caller sends nothing more. */
static bool too_many_errors(struct session *s)
{
    if (++s->bad_commands < s->r->cfg->max_bad_commands)
        return false;
    reply(s, "421 4.7.0 %s Too many errors, closing connection", s->r->cfg->hostname);
    log_event(LOG_WARN, "smtp.too_many_errors", "client_ip", "%s", s->ip, NULL);
    close_when_flushed(s);
    return true;
}

/* A rejected command: its own reply, or the 421 once there were too many.
 * Returns true when the session is closing. */
__attribute__((format(printf, 2, 3))) static bool command_error(struct session *s,
                                                                const char *fmt, ...)
{
    if (too_many_errors(s))
        return true;
    va_list ap;
    va_start(ap, fmt);
    vreply(s, fmt, ap);
    va_end(ap);
    return false;
}

static void set_timeout(struct session *s, int seconds)
{
    struct timeval tv = {seconds, 0};
    bufferevent_set_timeouts(s->bev, &tv, &tv);
}

/* ---- deadlines (whole command line, whole transaction, data rate) ---- */

static enum deadline_phase deadline_phase(const struct session *s)
{
    switch (s->st) {
    case ST_DATA:
    case ST_BDAT:
        return DEADLINE_CONTENT;
    case ST_AUTH_CHECK:
    case ST_COMMIT:
    case ST_CLOSING:
        return DEADLINE_PAUSED;
    default:
        return DEADLINE_COMMAND;
    }
}

/* Arms the one timer for the earliest deadline. The deadlines only move
 * later as the client makes progress (a reply, more content), so the timer
 * may fire early; it then looks again. While the server itself is busy it
 * looks again after command_deadline. */
static void deadline_arm(struct session *s)
{
    if (!s->deadline)
        return;
    enum deadline_kind kind;
    int64_t due = deadline_due(s->r->cfg, deadline_phase(s), &s->clock, &kind);
    int64_t wait = kind == DEADLINE_NONE ? (int64_t)s->r->cfg->command_deadline * 1000
                                         : due - mono_ms();
    if (wait < 0)
        wait = 0;
    struct timeval tv = {(time_t)(wait / 1000), (suseconds_t)(wait % 1000) * 1000};
    evtimer_add(s->deadline, &tv);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    struct session *s = arg;
    (void)fd;
    (void)what;
    enum deadline_kind kind;
    int64_t due = deadline_due(s->r->cfg, deadline_phase(s), &s->clock, &kind);
    if (s->dead || kind == DEADLINE_NONE || mono_ms() < due) {
        deadline_arm(s);
        return;
    }
    char line[160];
    snprintf(line, sizeof line, "421 4.4.2 %s Deadline exceeded (%s), closing connection",
             s->r->cfg->hostname, deadline_kind_name(kind));
    log_event(LOG_INFO, "smtp.deadline", "client_ip", "%s", s->ip, "deadline", "%s",
              deadline_kind_name(kind), NULL);
    if (s->st == ST_TLS) {
        /* a handshake never finished: no channel for a reply */
        events_reject(s->r, s->ip, NULL, REJECT_DEADLINE, line);
        session_close(s);
        return;
    }
    refused(s, REJECT_DEADLINE, line);
    close_when_flushed(s);
}

static void addr_reply(struct session *s, enum smtp_addr_error e, bool is_mail)
{
    const char *text = smtp_addr_error_text(e);
    switch (e) {
    case SMTP_ADDR_MISSING_PREFIX:
        command_error(s, "501 5.5.4 Syntax: %s", is_mail ? "MAIL FROM:<address>" : "RCPT TO:<address>");
        break;
    case SMTP_ADDR_SOURCE_ROUTE:
        command_error(s, "553 5.1.3 Source routes are not accepted: %s", text);
        break;
    case SMTP_ADDR_UTF8_NO_SMTPUTF8:
        command_error(s, "553 5.6.7 Non-ASCII address needs the SMTPUTF8 parameter on MAIL");
        break;
    case SMTP_ADDR_BAD_UTF8:
        command_error(s, "501 5.6.7 Malformed UTF-8 in address");
        break;
    case SMTP_ADDR_BAD_PARAM:
    case SMTP_ADDR_DUP_PARAM:
        command_error(s, "555 5.5.4 %s", text);
        break;
    case SMTP_ADDR_NULL_RCPT:
        command_error(s, "501 5.1.3 The null address <> cannot be a recipient");
        break;
    default:
        command_error(s, "501 %s Bad %s address syntax: %s", is_mail ? "5.1.7" : "5.1.3",
              is_mail ? "sender" : "recipient", text);
        break;
    }
}

/* ---- commands ---- */

static void cmd_ehlo(struct session *s, const struct smtp_command *c, bool esmtp)
{
    const struct config *cfg = s->r->cfg;
    if (c->arg_len >= sizeof s->helo || !smtp_helo_valid(c->arg, c->arg_len)) {
        /* RFC 5321 4.1.1.1: Domain or address-literal, no trailing text */
        command_error(s, "501 5.5.4 Syntax: %s domain or [address-literal]", esmtp ? "EHLO" : "HELO");
        return;
    }
    memcpy(s->helo, c->arg, c->arg_len);
    s->helo[c->arg_len] = 0;
    s->esmtp = esmtp;
    transaction_reset(s);
    s->st = ST_READY;
    if (!esmtp) {
        reply(s, "250 %s", cfg->hostname);
        return;
    }
    reply(s, "250-%s Hello %s [%s]", cfg->hostname, s->helo, s->ip);
    reply(s, "250-PIPELINING");
    reply(s, "250-SIZE %lld", authz_size_limit(sender_cred(s), cfg));
    reply(s, "250-8BITMIME");
    reply(s, "250-SMTPUTF8");
    reply(s, "250-CHUNKING");
    if (!s->tls && s->r->tls)
        reply(s, "250-STARTTLS");
    /* a client certificate already said who this is */
    if (auth_offered(s) && !s->authed)
        reply(s, "250-AUTH PLAIN LOGIN%s", s->r->creds ? " SCRAM-SHA-256" : "");
    reply(s, "250 ENHANCEDSTATUSCODES");
}

/* The credential's rules for a new transaction, in order: still valid
 * (changes made with `sluice creds` count from the next MAIL on), sender,
 * declared size, rate, quota. */
static bool mail_authorised(struct session *s)
{
    const struct config *cfg = s->r->cfg;
    struct authz_refusal ref;
    if (s->authed && policy_refresh(s->r, &s->cred, &s->cred_gen) < 0) {
        snprintf(ref.reply, sizeof ref.reply,
                 "530 5.7.0 Credential '%s' was revoked or deleted; authentication required",
                 s->auth_user);
        refused(s, REJECT_UNAUTHENTICATED, ref.reply);
        logout(s);
        return false;
    }
    const struct cred *c = sender_cred(s);
    if (authz_mail(c, cfg, &s->from, s->mp.size, &ref) < 0 ||
        authz_rate(s->r->ratelimit, c, s->ip, cfg->rate_per_ip, policy_now_ms(), &ref) < 0 ||
        authz_quota(s->r->accounting, c, time(NULL), &ref) < 0) {
        policy_refused(s, &ref);
        return false;
    }
    s->size_limit = authz_size_limit(c, cfg);
    return true;
}

static void cmd_mail(struct session *s, const struct smtp_command *c)
{
    const struct config *cfg = s->r->cfg;
    if (s->r->draining) {
        reply(s, "421 4.3.2 %s Service shutting down, try again later", cfg->hostname);
        close_when_flushed(s);
        return;
    }
    if (!s->authed && !s->relay_net) {
        log_event(LOG_WARN, "policy.rejected", "client_ip", "%s", s->ip, "reason", "%s",
                  "unauthenticated", NULL);
        if (!too_many_errors(s))
            refused(s, REJECT_UNAUTHENTICATED,
                    "530 5.7.0 Authentication required: log in with AUTH before sending");
        return;
    }
    enum smtp_addr_error e = smtp_parse_mail(c->arg, c->arg_len, &s->from, &s->mp);
    if (e != SMTP_ADDR_OK) {
        addr_reply(s, e, true);
        memset(&s->from, 0, sizeof s->from);
        return;
    }
    if (s->mp.size > cfg->max_message_size) {
        reply(s, "552 5.3.4 Message size %lld exceeds the limit of %lld bytes", s->mp.size,
              cfg->max_message_size);
        memset(&s->from, 0, sizeof s->from);
        return;
    }
    if (s->mp.size > cfg->max_inflight_bytes - s->r->inflight_bytes) {
        /* RFC 1870 6.1: the declared size does not fit in memory now */
        refused(s, REJECT_MEMORY,
                "452 4.3.1 Insufficient system storage: no room for a message of that size now, "
                "try again later");
        memset(&s->from, 0, sizeof s->from);
        return;
    }
    if (!mail_authorised(s)) {
        memset(&s->from, 0, sizeof s->from);
        return;
    }
    s->clock.txn_ms = mono_ms();
    deadline_arm(s);
    s->st = ST_MAIL;
    reply(s, "250 2.1.0 Sender ok");
}

static void cmd_rcpt(struct session *s, const struct smtp_command *c)
{
    const struct config *cfg = s->r->cfg;
    struct smtp_path p;
    struct smtp_rcpt_params rp;
    enum smtp_addr_error e = smtp_parse_rcpt(c->arg, c->arg_len, s->mp.smtputf8, &p, &rp);
    if (e != SMTP_ADDR_OK) {
        addr_reply(s, e, false);
        return;
    }
    struct authz_refusal ref;
    if (authz_rcpt(sender_cred(s), cfg, &p, &ref) < 0) {
        policy_refused(s, &ref);
        return;
    }
    if (s->n_rcpts >= (size_t)cfg->max_recipients) {
        /* RFC 5321 4.5.3.1.10: 452 for too many recipients */
        snprintf(ref.reply, sizeof ref.reply,
                 "452 4.5.3 Too many recipients (limit %d per message)", cfg->max_recipients);
        refused(s, REJECT_RECIPIENTS, ref.reply);
        return;
    }
    if (s->n_rcpts == s->cap_rcpts) {
        size_t nc = s->cap_rcpts ? s->cap_rcpts * 2 : 8;
        char **nv = realloc(s->rcpts, nc * sizeof *nv);
        if (!nv) {
            reply(s, "452 4.3.0 Out of memory");
            return;
        }
        s->rcpts = nv;
        s->cap_rcpts = nc;
    }
    s->rcpts[s->n_rcpts++] = strdup(p.addr);
    s->st = ST_RCPT;
    reply(s, "250 2.1.5 Recipient ok");
}

static void begin_content(struct session *s, bool dot_mode)
{
    smtp_data_decoder_init(&s->dec, dot_mode);
    s->msg.len = 0;
    s->data_total = 0;
    s->too_big = false;
    set_timeout(s, s->r->cfg->data_timeout);
    s->clock.content_ms = mono_ms();
    s->clock.content_bytes = 0;
}

static void cmd_data(struct session *s, const struct smtp_command *c)
{
    if (c->arg_len) {
        command_error(s, "501 5.5.4 DATA takes no arguments");
        return;
    }
    if (s->mp.body == SMTP_BODY_BINARYMIME) {
        reply(s, "503 5.5.1 BINARYMIME requires BDAT");
        return;
    }
    begin_content(s, true);
    s->st = ST_DATA;
    reply(s, "354 End data with <CR><LF>.<CR><LF>");
    deadline_arm(s);
}

static void cmd_bdat(struct session *s, const struct smtp_command *c)
{
    char arg[64];
    if (c->arg_len == 0 || c->arg_len >= sizeof arg) {
        command_error(s, "501 5.5.4 Syntax: BDAT size [LAST]");
        return;
    }
    memcpy(arg, c->arg, c->arg_len);
    arg[c->arg_len] = 0;
    char *end;
    errno = 0;
    unsigned long long size = strtoull(arg, &end, 10);
    bool last = false;
    if (end == arg || errno || arg[0] == '-') {
        command_error(s, "501 5.5.4 Syntax: BDAT size [LAST]");
        return;
    }
    while (*end == ' ')
        end++;
    if (strcasecmp(end, "LAST") == 0)
        last = true;
    else if (*end) {
        command_error(s, "501 5.5.4 Syntax: BDAT size [LAST]");
        return;
    }
    if (!s->bdat_used) {
        begin_content(s, false);
        s->bdat_used = true;
    }
    s->bdat_left = size;
    s->bdat_last = last;
    s->st = ST_BDAT;
    set_timeout(s, s->r->cfg->data_timeout);
    deadline_arm(s);
}

/* ---- AUTH (RFC 4954): PLAIN, LOGIN, SCRAM-SHA-256 ---- */

static void on_auth_delay(evutil_socket_t fd, short what, void *arg);

/* A client known from here on: the credential (owned by the session from
 * now), for MAIL's rules, the events and the spool's auth= metadata. */
static void set_identity(struct session *s, const char *method, struct cred *c, uint64_t gen)
{
    logout(s);
    if (s->unauth_slot) {
        listeners_authenticated(s->r->listeners, (struct sockaddr *)&s->peer);
        s->unauth_slot = false;
    }
    s->authed = true;
    s->cred = c;
    s->cred_gen = gen;
    s->auth_method = method;
    snprintf(s->auth_user, sizeof s->auth_user, "%s", c->name);
    events_auth(s->r, s->ip, method, c->name, true, NULL);
}

static void auth_succeeded(struct session *s, const char *method, struct cred *c, uint64_t gen)
{
    s->st = ST_READY;
    set_identity(s, method, c, gen);
    reply(s, "235 2.7.0 Authentication successful");
}

/* The address made too many failed attempts: 421 and close (RFC 5321
 * 3.8), for this attempt and every new one until the block ends. */
static void auth_blocked(struct session *s, const struct authfail_verdict *v)
{
    char line[AUTHZ_REPLY_MAX];
    if (authfail_reply(v, s->ip, line, sizeof line) < 0)
        snprintf(line, sizeof line, "421 4.7.0 Too many failed authentications");
    reply(s, "%s", line);
    events_security(s->r, s->ip, "auth_blocked", line);
    close_when_flushed(s);
}

/* RFC 4954 6: 535 for bad credentials; the text never says which part was
 * wrong, nor whether the user exists. */
static bool auth_fail_reply(struct session *s)
{
    return !command_error(s, "535 5.7.8 Authentication credentials invalid");
}

/* Counts a failure for the address, then answers at once, later (on a
 * timer: the loop keeps serving others) or, once blocked, with 421.
 * Returns true when the session may read its next command now. */
static bool auth_failed(struct session *s, const char *method, const char *user, const char *why)
{
    struct relay *r = s->r;
    events_auth(r, s->ip, method, user, false, why);
    account(s, ACCT_REJECTED, "auth", 0);
    s->st = ST_READY;
    struct authfail_verdict v = {0};
    if (r->authfail)
        authfail_record(r->authfail, s->ip, policy_now_ms(), &v);
    if (v.blocked) {
        auth_blocked(s, &v);
        return false;
    }
    if (v.delay_ms == 0)
        return auth_fail_reply(s);
    s->st = ST_AUTH_CHECK;
    s->busy++;
    struct timeval tv = {(time_t)(v.delay_ms / 1000), (suseconds_t)(v.delay_ms % 1000) * 1000};
    if (event_base_once(r->base, -1, EV_TIMEOUT, on_auth_delay, s, &tv) < 0) {
        s->busy--;
        s->st = ST_READY;
        return auth_fail_reply(s);
    }
    return false;
}

static void on_auth_delay(evutil_socket_t fd, short what, void *arg)
{
    struct session *s = arg;
    (void)fd;
    (void)what;
    s->busy--;
    if (s->dead) {
        session_close(s);
        return;
    }
    s->st = ST_READY;
    if (auth_fail_reply(s))
        process_input(s);
}

static void auth_work(void *arg)
{
    struct session *s = arg;
    if (policy_check_password(s->r, s->auth_users, s->login_user, s->check_pass, s->check_mech,
                              &s->check_cred, &s->check_method, &s->check_gen) < 0)
        s->check_cred = NULL;
}

static void auth_done(void *arg)
{
    struct session *s = arg;
    s->busy--;
    explicit_bzero(s->check_pass, sizeof s->check_pass);
    users_free(s->auth_users);
    s->auth_users = NULL;
    struct cred *c = s->check_cred;
    s->check_cred = NULL;
    if (s->dead) {
        creds_free_cred(c);
        session_close(s);
        return;
    }
    if (c)
        auth_succeeded(s, s->check_method, c, s->check_gen);
    else if (!auth_failed(s, s->check_mech, s->login_user, "invalid credentials"))
        return;
    process_input(s);
}

/* PLAIN and LOGIN end here: argon2id runs on a worker, never on the loop,
 * and only once per connection (235 ends the exchange). */
static void start_auth_check(struct session *s, const char *mech, const char *user,
                             const char *pass)
{
    if (user != s->login_user)
        snprintf(s->login_user, sizeof s->login_user, "%s", user);
    snprintf(s->check_pass, sizeof s->check_pass, "%s", pass);
    s->check_mech = mech;
    s->check_cred = NULL;
    s->auth_users = users_ref(s->r->users);
    s->st = ST_AUTH_CHECK;
    s->busy++;
    if (worker_submit(s->r->worker, auth_work, auth_done, s) < 0) {
        explicit_bzero(s->check_pass, sizeof s->check_pass);
        users_free(s->auth_users);
        s->auth_users = NULL;
        s->busy--;
        s->st = ST_READY;
        reply(s, "454 4.7.0 Temporary authentication failure, try again later");
    }
}

static void scram_end(struct session *s)
{
    scram_server_free(s->scram);
    s->scram = NULL;
}

/* One base64 SCRAM message from the client (RFC 7677, RFC 5802 section 5):
 * the server state machine decides; the session only frames 334/235/535. */
static void scram_input(struct session *s, const char *b64, size_t len)
{
    size_t cap = len / 4 * 3 + 1;
    unsigned char *msg = malloc(cap);
    long n = msg ? base64_decode(b64, len, msg, 0) : -1;
    if (n < 0) {
        free(msg);
        scram_end(s);
        s->st = ST_READY;
        command_error(s, "501 5.5.2 Cannot decode the SCRAM-SHA-256 response");
        return;
    }
    char *server_msg = NULL;
    enum scram_status st = scram_server_step(s->scram, (const char *)msg, (size_t)n,
                                             policy_scram_lookup, s->r, &server_msg);
    explicit_bzero(msg, cap);
    free(msg);
    if (st == SCRAM_CONTINUE && server_msg) {
        size_t ml = strlen(server_msg);
        char *enc = malloc(BASE64_ENCODED_SIZE(ml));
        if (enc) {
            base64_encode(server_msg, ml, enc);
            s->st = ST_AUTH_SCRAM;
            reply(s, "334 %s", enc);
            free(enc);
            free(server_msg);
            return;
        }
        st = SCRAM_FAILURE;
    }
    free(server_msg);
    char user[SCRAM_NAME_MAX + 1];
    snprintf(user, sizeof user, "%s", scram_server_authcid(s->scram));
    bool temporary = st != SCRAM_SUCCESS && scram_server_error(s->scram) == SCRAM_ERR_TEMPORARY;
    const char *why = scram_server_reason(s->scram);
    char reason[128];
    snprintf(reason, sizeof reason, "%s", why ? why : "failed");
    scram_end(s);
    struct cred *c = NULL;
    uint64_t gen = policy_generation(s->r);
    if (st == SCRAM_SUCCESS && creds_lookup(s->r->creds, user, &c) == 0 && !c->revoked) {
        auth_succeeded(s, "SCRAM-SHA-256", c, gen);
        return;
    }
    creds_free_cred(c);
    if (temporary) {
        s->st = ST_READY;
        reply(s, "454 4.7.0 Temporary authentication failure, try again later");
        return;
    }
    auth_failed(s, "SCRAM-SHA-256", user, reason);
}

static void start_scram(struct session *s, const char *initial, size_t initial_len)
{
    s->scram = policy_scram_new(s->r);
    if (!s->scram) {
        reply(s, "454 4.7.0 Temporary authentication failure, try again later");
        return;
    }
    if (!initial) {
        s->st = ST_AUTH_SCRAM;
        reply(s, "334 ");
        return;
    }
    scram_input(s, initial, initial_len);
}

static bool plain_decode(struct session *s, const char *b64, size_t len, struct sasl_plain *sp)
{
    if (sasl_plain_decode(b64, len, sp) == 0 &&
        (!sp->authzid[0] || strcmp(sp->authzid, sp->authcid) == 0))
        return true;
    explicit_bzero(sp, sizeof *sp);
    s->st = ST_READY;
    command_error(s, "501 5.5.2 Cannot decode the PLAIN response");
    return false;
}

static void cmd_auth(struct session *s, const struct smtp_command *c)
{
    if (!auth_offered(s)) {
        /* RFC 4954 6 */
        command_error(s, "538 5.7.11 Encryption required for requested authentication mechanism");
        return;
    }
    if (s->authed) {
        reply(s, "503 5.5.1 Already authenticated");
        return;
    }
    struct authfail_verdict v = {0};
    if (s->r->authfail)
        authfail_check(s->r->authfail, s->ip, policy_now_ms(), &v);
    if (v.blocked) {
        auth_blocked(s, &v);
        return;
    }
    char mech[32];
    size_t ml = 0;
    while (ml < c->arg_len && c->arg[ml] != ' ' && ml < sizeof mech - 1) {
        mech[ml] = c->arg[ml];
        ml++;
    }
    mech[ml] = 0;
    const char *initial = ml < c->arg_len ? c->arg + ml + 1 : NULL;
    size_t initial_len = initial ? c->arg_len - ml - 1 : 0;
    if (strcasecmp(mech, "PLAIN") == 0) {
        if (!initial) {
            s->st = ST_AUTH_PLAIN;
            reply(s, "334 ");
            return;
        }
        struct sasl_plain sp;
        if (!plain_decode(s, initial, initial_len, &sp))
            return;
        start_auth_check(s, "PLAIN", sp.authcid, sp.passwd);
        explicit_bzero(&sp, sizeof sp);
    } else if (strcasecmp(mech, "LOGIN") == 0) {
        if (initial) {
            if (sasl_login_decode(initial, initial_len, s->login_user, sizeof s->login_user) < 0) {
                command_error(s, "501 5.5.2 Cannot decode the LOGIN response");
                return;
            }
            s->st = ST_AUTH_LOGIN_PASS;
            reply(s, "334 UGFzc3dvcmQ6");
            return;
        }
        s->st = ST_AUTH_LOGIN_USER;
        reply(s, "334 VXNlcm5hbWU6");
    } else if (strcasecmp(mech, "SCRAM-SHA-256") == 0 && s->r->creds) {
        start_scram(s, initial, initial_len);
    } else {
        command_error(s, "504 5.5.4 Unrecognized authentication type; use PLAIN, LOGIN or "
                         "SCRAM-SHA-256");
    }
}

static void auth_continuation(struct session *s, const char *line, size_t len)
{
    if (len == 1 && line[0] == '*') {
        scram_end(s);
        s->st = ST_READY;
        reply(s, "501 5.0.0 Authentication cancelled");
        return;
    }
    if (s->st == ST_AUTH_SCRAM) {
        scram_input(s, line, len);
    } else if (s->st == ST_AUTH_PLAIN) {
        struct sasl_plain sp;
        if (!plain_decode(s, line, len, &sp))
            return;
        start_auth_check(s, "PLAIN", sp.authcid, sp.passwd);
        explicit_bzero(&sp, sizeof sp);
    } else if (s->st == ST_AUTH_LOGIN_USER) {
        if (sasl_login_decode(line, len, s->login_user, sizeof s->login_user) < 0) {
            s->st = ST_READY;
            command_error(s, "501 5.5.2 Cannot decode the LOGIN response");
            return;
        }
        s->st = ST_AUTH_LOGIN_PASS;
        reply(s, "334 UGFzc3dvcmQ6");
    } else {
        char pass[SASL_FIELD_MAX + 1];
        if (sasl_login_decode(line, len, pass, sizeof pass) < 0) {
            s->st = ST_READY;
            command_error(s, "501 5.5.2 Cannot decode the LOGIN response");
            return;
        }
        start_auth_check(s, "LOGIN", s->login_user, pass);
        explicit_bzero(pass, sizeof pass);
    }
}

static void start_tls(struct session *s);

static void cmd_starttls(struct session *s, const struct smtp_command *c)
{
    if (s->tls || !s->r->tls) {
        reply(s, "503 5.5.1 TLS already active");
        return;
    }
    if (c->arg_len) {
        reply(s, "501 5.5.4 STARTTLS takes no arguments");
        return;
    }
    /* RFC 3207 6 / CVE-2011-0411: anything the client pipelined after
     * STARTTLS arrived in clear; it is dropped, never executed. */
    struct evbuffer *in = bufferevent_get_input(s->bev);
    size_t extra = evbuffer_get_length(in);
    if (extra) {
        evbuffer_drain(in, extra);
        char detail[64];
        snprintf(detail, sizeof detail, "%zu bytes pipelined after STARTTLS discarded", extra);
        events_security(s->r, s->ip, "starttls_injection", detail);
    }
    reply(s, "220 2.0.0 Ready to start TLS");
    start_tls(s);
}

static void sequence_error(struct session *s, enum smtp_verb v)
{
    const char *why = "bad sequence of commands";
    if (s->st == ST_INIT && (v == SMTP_VERB_MAIL || v == SMTP_VERB_AUTH))
        why = "send EHLO first";
    else if (v == SMTP_VERB_MAIL)
        why = "MAIL already given; RSET first";
    else if (v == SMTP_VERB_RCPT)
        why = "need MAIL before RCPT";
    else if (v == SMTP_VERB_DATA || v == SMTP_VERB_BDAT)
        why = s->st == ST_MAIL ? "no valid recipients" : "need MAIL and RCPT first";
    else if (v == SMTP_VERB_AUTH)
        why = "AUTH not allowed during a mail transaction";
    else if (s->st == ST_BDAT_WAIT)
        why = "only BDAT, RSET, NOOP or QUIT between BDAT chunks";
    else if (v == SMTP_VERB_EHLO || v == SMTP_VERB_HELO || v == SMTP_VERB_STARTTLS)
        why = "not allowed during a mail transaction";
    command_error(s, "503 5.5.1 %s", why);
}

static void handle_command(struct session *s, const char *line, size_t len)
{
    struct smtp_command c;
    if (smtp_command_parse(line, len, &c) < 0 || c.verb == SMTP_VERB_UNKNOWN) {
        command_error(s, "500 5.5.2 Command not recognized");
        return;
    }
    if (!(state_allows[s->st] & (1u << c.verb))) {
        if (c.verb == SMTP_VERB_BDAT) {
            /* RFC 3030 2: the chunk must still be read before replying */
            enum session_state before = s->st;
            cmd_bdat(s, &c);
            if (s->st == ST_BDAT)
                s->bdat_error = before == ST_MAIL ? "554 5.5.1 No valid recipients"
                                                  : "503 5.5.1 Need MAIL and RCPT before BDAT";
            return;
        }
        sequence_error(s, c.verb);
        return;
    }
    switch (c.verb) {
    case SMTP_VERB_EHLO:
        cmd_ehlo(s, &c, true);
        break;
    case SMTP_VERB_HELO:
        cmd_ehlo(s, &c, false);
        break;
    case SMTP_VERB_MAIL:
        cmd_mail(s, &c);
        break;
    case SMTP_VERB_RCPT:
        cmd_rcpt(s, &c);
        break;
    case SMTP_VERB_DATA:
        if (s->bdat_used) {
            reply(s, "503 5.5.1 DATA cannot follow BDAT");
            break;
        }
        cmd_data(s, &c);
        break;
    case SMTP_VERB_BDAT:
        cmd_bdat(s, &c);
        break;
    case SMTP_VERB_RSET:
        transaction_reset(s);
        if (s->st != ST_INIT)
            s->st = ST_READY;
        reply(s, "250 2.0.0 Ok");
        break;
    case SMTP_VERB_NOOP:
        reply(s, "250 2.0.0 Ok");
        break;
    case SMTP_VERB_QUIT:
        reply(s, "221 2.0.0 %s Bye", s->r->cfg->hostname);
        close_when_flushed(s);
        break;
    case SMTP_VERB_VRFY:
        reply(s, "252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery");
        break;
    case SMTP_VERB_EXPN:
        reply(s, "502 5.5.1 EXPN not supported");
        break;
    case SMTP_VERB_HELP:
        reply(s, "214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP "
                 "STARTTLS AUTH");
        break;
    case SMTP_VERB_STARTTLS:
        cmd_starttls(s, &c);
        break;
    case SMTP_VERB_AUTH:
        cmd_auth(s, &c);
        break;
    default:
        command_error(s, "500 5.5.2 Command not recognized");
        break;
    }
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
        account(s, ACCT_ACCEPTED, NULL, (long long)s->msg.len);
    }
    if (s->dead) {
        session_close(s);
        return;
    }
    if (err == -ENOSPC || err == -EDQUOT) {
        refused(s, REJECT_STORAGE, "452 4.3.1 Insufficient system storage, try again later");
        log_event(LOG_ERROR, "spool.write_failed", "id", "%s", ids, "error", "%s", strerror(-err),
                  NULL);
    } else if (err) {
        refused(s, REJECT_STORAGE, "451 4.3.0 Could not store the message safely, try again later");
        log_event(LOG_ERROR, "spool.commit_failed", "id", "%s", ids, "error", "%s", strerror(-err),
                  NULL);
    } else {
        reply(s, "250 2.0.0 Ok: queued as %s", ids);
    }
    after_transaction(s);
    set_timeout(s, s->r->cfg->command_timeout);
    process_input(s);
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
    const struct cred *c = sender_cred(s);
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
    set_timeout(s, cfg->command_timeout);
    if (s->bdat_error) {
        s->r->n.rejected++;
        reply(s, "%s", s->bdat_error);
        after_transaction(s);
        return;
    }
    struct authz_refusal ref;
    if (content_refused(s, &ref)) {
        policy_refused(s, &ref);
        after_transaction(s);
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
                refused(s, REJECT_SIGNING,
                        "451 4.3.0 The message could not be DKIM-signed; try again later");
                after_transaction(s);
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
            refused(s, REJECT_STORAGE, "452 4.3.1 Insufficient system storage, try again later");
        else if (r == -EFBIG)
            refused(s, REJECT_SIZE, "552 5.3.4 Message too big for the spool");
        else
            refused(s, REJECT_STORAGE,
                    "451 4.3.0 Local error while storing the message, try again later");
        log_event(LOG_ERROR, "spool.write_failed", "client_ip", "%s", s->ip, "error", "%s",
                  strerror(-r), NULL);
        after_transaction(s);
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
        dkim_drop(s);
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
            policy_refused(s, &ref);
            after_transaction(s);
            return;
        }
        if (s->bdat_error) {
            reply(s, "%s", s->bdat_error);
            after_transaction(s);
            return;
        }
        reply(s, "250 2.0.0 %zu octets received", s->data_total);
        return;
    }
    smtp_data_decoder_finish(&s->dec);
    content_done(s);
}

/* Consumes DATA or BDAT content from the input. Returns true when the
 * content ended (and was handled), false when more input is needed. */
static bool consume_content(struct session *s, struct evbuffer *in)
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

/* ---- input loop ---- */

static bool session_paused(const struct session *s)
{
    return s->dead || s->st == ST_AUTH_CHECK || s->st == ST_COMMIT || s->st == ST_TLS ||
           s->st == ST_CLOSING;
}

static void handle_line(struct session *s, const char *line, size_t len)
{
    if (auth_waiting(s->st))
        auth_continuation(s, line, len);
    else
        handle_command(s, line, len);
}

/* RFC 4954 4: an AUTH command carrying an initial response, and every line
 * of the exchange after it, may be up to 12288 octets; other command lines
 * are held to max_line_length. */
static size_t line_limit(const struct session *s, struct evbuffer *in)
{
    char head[5];
    if (auth_waiting(s->st) ||
        (evbuffer_copyout(in, head, sizeof head) == (ev_ssize_t)sizeof head &&
         strncasecmp(head, "AUTH ", sizeof head) == 0))
        return AUTH_LINE_MAX;
    return (size_t)s->r->cfg->max_line_length;
}

/* An over-long line is answered as soon as it passes the limit, not when
 * (if ever) its LF arrives; what is left of it is then dropped. Inside a
 * SASL exchange it also ends the exchange (RFC 4954 4: 500 5.5.6), so the
 * next line is read as a command again. Returns true when closing. */
static bool line_too_long(struct session *s, size_t limit)
{
    bool in_auth = auth_waiting(s->st);
    if (in_auth) {
        scram_end(s);
        s->st = ST_READY;
    }
    if (too_many_errors(s))
        return true;
    char line[128];
    if (in_auth)
        snprintf(line, sizeof line, "500 5.5.6 Authentication exchange line is too long (limit "
                                    "%zu octets); authentication cancelled",
                 limit);
    else
        snprintf(line, sizeof line, "500 5.5.6 Line too long (limit %zu octets)", limit);
    refused(s, REJECT_LINE_TOO_LONG, line);
    return false;
}

/* Moves the next n octets (one line) from the input into dst, wiping them
 * in the input buffer first: an AUTH line holds a password, and libevent
 * would free that memory as it is. */
static void take_line(struct evbuffer *in, char *dst, size_t n)
{
    evbuffer_copyout(in, dst, n);
    struct evbuffer_iovec v[8];
    int nv = evbuffer_peek(in, (ev_ssize_t)n, NULL, v, 8);
    size_t left = n;
    for (int i = 0; i < nv && i < 8 && left > 0; i++) {
        size_t k = v[i].iov_len < left ? v[i].iov_len : left;
        OPENSSL_cleanse(v[i].iov_base, k);
        left -= k;
    }
    evbuffer_drain(in, n);
}

static void process_input(struct session *s)
{
    struct evbuffer *in = bufferevent_get_input(s->bev);
    while (!session_paused(s)) {
        if (s->st == ST_DATA || s->st == ST_BDAT) {
            if (!consume_content(s, in))
                break;
            continue;
        }
        size_t limit = line_limit(s, in);
        size_t eol_len;
        struct evbuffer_ptr p = evbuffer_search_eol(in, NULL, &eol_len, EVBUFFER_EOL_LF);
        if (p.pos < 0) {
            size_t have = evbuffer_get_length(in);
            if (have > limit || (s->discarding && have > 0)) {
                evbuffer_drain(in, have);
                if (!s->discarding) {
                    s->discarding = true;
                    if (line_too_long(s, limit))
                        break;
                }
            }
            break;
        }
        size_t n = (size_t)p.pos + 1; /* through the LF */
        if (s->discarding) {
            /* the end of a line already answered */
            evbuffer_drain(in, n);
            s->discarding = false;
            continue;
        }
        if (n > limit) {
            evbuffer_drain(in, n);
            if (line_too_long(s, limit))
                break;
            continue;
        }
        take_line(in, s->line, n);
        if (n < 2 || s->line[n - 2] != '\r') {
            OPENSSL_cleanse(s->line, n);
            if (command_error(s, "500 5.5.2 Command lines must end with CRLF"))
                break;
            continue;
        }
        s->line[n - 2] = 0;
        handle_line(s, s->line, n - 2);
        /* the line may have been an AUTH response: no copy outlives its use */
        OPENSSL_cleanse(s->line, n);
    }
}

/* ---- libevent callbacks ---- */

static void on_read(struct bufferevent *bev, void *arg)
{
    (void)bev;
    process_input(arg);
}

/* Mutual TLS: a client certificate registered with `sluice creds add
 * --cert` logs the session in as that credential, no AUTH needed. An
 * unknown certificate changes nothing (the client may still AUTH). */
static void tls_client_identity(struct session *s, SSL *ssl)
{
    struct cred *c = NULL;
    char fp[65];
    uint64_t gen = policy_generation(s->r);
    int rc = policy_client_cert(s->r, ssl, &c, fp);
    if (rc == 0) {
        set_identity(s, "client-cert", c, gen);
        return;
    }
    if (rc == CREDS_EDENIED)
        events_auth(s->r, s->ip, "client-cert", NULL, false, "certificate of a revoked credential");
    else if (fp[0])
        log_event(LOG_INFO, "tls.client_cert_unknown", "client_ip", "%s", s->ip, "sha256", "%s", fp,
                  NULL);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    struct session *s = arg;
    if (what & BEV_EVENT_CONNECTED) {
        /* TLS handshake finished */
        SSL *ssl = bufferevent_openssl_get_ssl(bev);
        if (ssl)
            tls_describe(ssl, s->tls_desc, sizeof s->tls_desc);
        s->tls = true;
        s->st = ST_INIT;
        s->clock.line_ms = mono_ms();
        const char *sni = ssl ? SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name) : NULL;
        log_event(LOG_INFO, "tls.established", "client_ip", "%s", s->ip, "tls", "%s", s->tls_desc,
                  "sni", "%s", sni ? sni : "", NULL);
        tls_client_identity(s, ssl);
        process_input(s);
        return;
    }
    if (what & BEV_EVENT_TIMEOUT) {
        log_event(LOG_INFO, "smtp.timeout", "client_ip", "%s", s->ip, NULL);
        if (s->st == ST_TLS) {
            session_close(s); /* mid-handshake: a reply could never leave */
            return;
        }
        reply(s, "421 4.4.2 %s Timeout exceeded, closing connection", s->r->cfg->hostname);
        close_when_flushed(s);
        return;
    }
    if (what & BEV_EVENT_ERROR) {
        unsigned long e;
        bool tls_err = false;
        while ((e = bufferevent_get_openssl_error(bev)) != 0) {
            char buf[256];
            ERR_error_string_n(e, buf, sizeof buf);
            if (!tls_err) {
                log_event(LOG_WARN, "tls.failed", "client_ip", "%s", s->ip, "error", "%s", buf,
                          NULL);
                events_security(s->r, s->ip, "tls_failure", buf);
            }
            tls_err = true;
        }
        if (!tls_err && s->st == ST_TLS)
            events_security(s->r, s->ip, "tls_failure", "connection lost during the handshake");
    }
    session_close(s);
}

static void attach(struct session *s, struct bufferevent *bev)
{
    s->bev = bev;
    bufferevent_setcb(bev, on_read, on_write, on_event, s);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
    set_timeout(s, s->r->cfg->command_timeout);
}

static void start_tls(struct session *s)
{
    SSL *ssl = SSL_new(s->r->tls);
    if (!ssl) {
        close_when_flushed(s);
        return;
    }
    struct bufferevent *tb = bufferevent_openssl_filter_new(
        s->r->base, s->bev, ssl, BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
    if (!tb) {
        SSL_free(ssl);
        close_when_flushed(s);
        return;
    }
    bufferevent_openssl_set_allow_dirty_shutdown(tb, 1);
    /* RFC 3207 4.2: after TLS the client starts over, knowing nothing */
    s->helo[0] = 0;
    s->esmtp = false;
    logout(s);
    transaction_reset(s);
    s->st = ST_TLS;
    attach(s, tb);
}

/* ---- lifecycle ---- */

static void unlink_session(struct session *s)
{
    if (s->prev)
        s->prev->next = s->next;
    else if (s->r->session_list == s)
        s->r->session_list = s->next;
    if (s->next)
        s->next->prev = s->prev;
    s->prev = s->next = NULL;
}

/* Before the socket closes: a TLS session says close_notify (RFC 8446 6.1),
 * and whatever the TLS layer left for the socket under a STARTTLS filter (that
 * alert, or a handshake failure alert) is written out now instead of lost. */
static void tls_goodbye(struct session *s)
{
    SSL *ssl = bufferevent_openssl_get_ssl(s->bev);
    if (ssl && s->tls && SSL_is_init_finished(ssl))
        SSL_shutdown(ssl);
    struct bufferevent *under = bufferevent_get_underlying(s->bev);
    if (under) {
        struct evbuffer *out = bufferevent_get_output(under);
        evutil_socket_t fd = bufferevent_getfd(under);
        if (fd >= 0 && evbuffer_get_length(out) > 0) {
            /* the bufferevent freezes its buffer's start; it is about to be
             * freed, so write the rest straight to the socket */
            evbuffer_unfreeze(out, 1);
            evbuffer_write(out, fd);
        }
    }
}

static void session_close(struct session *s)
{
    if (!s->dead) {
        s->dead = true;
        if (s->bev)
            tls_goodbye(s);
        if (s->bev)
            bufferevent_free(s->bev);
        s->bev = NULL;
        listeners_release(s->r->listeners, (struct sockaddr *)&s->peer, s->unauth_slot);
        s->unauth_slot = false;
        if (s->deadline)
            event_free(s->deadline);
        s->deadline = NULL;
        unlink_session(s);
        s->r->sessions--;
    }
    if (s->busy > 0)
        return; /* a worker job or spool commit still refers to s */
    transaction_reset(s);
    msgbuf_release(&s->msg, &s->r->inflight_bytes);
    free(s->rcpts);
    if (s->auth_users)
        users_free(s->auth_users);
    explicit_bzero(s->check_pass, sizeof s->check_pass);
    creds_free_cred(s->check_cred);
    creds_free_cred(s->cred);
    scram_server_free(s->scram);
    free(s);
}

void session_start(struct relay *r, evutil_socket_t fd, const struct sockaddr *sa, int salen,
                   bool implicit_tls, bool unauth)
{
    struct session *s = calloc(1, sizeof *s);
    if (!s) {
        evutil_closesocket(fd);
        listeners_release(r->listeners, sa, unauth);
        return;
    }
    s->r = r;
    s->unauth_slot = unauth;
    memcpy(&s->peer, sa, (size_t)salen < sizeof s->peer ? (size_t)salen : sizeof s->peer);
    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, s->ip, sizeof s->ip);
    else if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, s->ip, sizeof s->ip);
    s->loopback = sockaddr_is_loopback(sa);
    s->relay_net = r->relay_nets && cidr_list_match(r->relay_nets, sa);
    s->next = r->session_list;
    if (s->next)
        s->next->prev = s;
    r->session_list = s;
    r->sessions++;
    r->n.connections++;

    struct bufferevent *bev;
    if (implicit_tls) {
        SSL *ssl = SSL_new(r->tls);
        bev = ssl ? bufferevent_openssl_socket_new(r->base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                                   BEV_OPT_CLOSE_ON_FREE)
                  : NULL;
        if (bev)
            bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
        s->st = ST_TLS;
    } else {
        bev = bufferevent_socket_new(r->base, fd, BEV_OPT_CLOSE_ON_FREE);
        s->st = ST_INIT;
    }
    if (!bev) {
        evutil_closesocket(fd);
        s->bev = NULL;
        session_close(s);
        return;
    }
    attach(s, bev);
    s->deadline = evtimer_new(r->base, on_deadline, s);
    s->clock.line_ms = mono_ms();
    deadline_arm(s);
    log_event(LOG_DEBUG, "connection.open", "client_ip", "%s", s->ip, "implicit_tls", "#%d",
              (int)implicit_tls, NULL);
    reply(s, "220 %s ESMTP Sluice ready", r->cfg->hostname);
}

bool session_evict_unauth(struct relay *r)
{
    struct session *oldest = NULL;
    /* newest first in the list: the last match is the longest connected */
    for (struct session *s = r->session_list; s; s = s->next)
        if (s->unauth_slot && !s->dead && s->st != ST_CLOSING && s->st != ST_AUTH_CHECK)
            oldest = s;
    if (!oldest)
        return false;
    listeners_authenticated(r->listeners, (struct sockaddr *)&oldest->peer);
    oldest->unauth_slot = false;
    log_event(LOG_WARN, "connection.evicted", "client_ip", "%s", oldest->ip, NULL);
    if (oldest->st == ST_TLS) {
        /* mid-handshake there is no channel for a reply */
        session_close(oldest);
        return true;
    }
    reply(oldest, "421 4.7.0 %s Too many unauthenticated connections, closing the oldest",
          r->cfg->hostname);
    close_when_flushed(oldest);
    return true;
}

void session_drain_all(struct relay *r)
{
    struct session *s = r->session_list;
    while (s) {
        struct session *next = s->next;
        if (s->st == ST_INIT || s->st == ST_READY) {
            reply(s, "421 4.3.2 %s Service shutting down, closing connection", r->cfg->hostname);
            close_when_flushed(s);
        }
        s = next;
    }
}

void session_close_all(struct relay *r)
{
    while (r->session_list)
        session_close(r->session_list);
}
