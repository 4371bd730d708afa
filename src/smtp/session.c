/* The SMTP server session. Input is processed line by line (or as DATA/BDAT
 * content) straight from the bufferevent's input buffer; replies accumulate in
 * the output buffer and leave together, which is how pipelined clients get
 * one write per batch. While a check runs off the loop (AUTH) or the spool is
 * committing, input stays buffered and is resumed afterwards. */
#include "smtp/session.h"

#include "smtp/session_int.h"

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
#include "mail/address.h"
#include "smtp/command.h"
#include "smtp/data.h"
#include "smtp/deadline.h"
#include "intake/submit.h"
#include "smtp/sasl.h"
#include "mail/scram.h"
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

int64_t session_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- output ---- */

__attribute__((format(printf, 2, 0))) void session_vreply(struct session *s, const char *fmt,
                                                          va_list ap)
{
    if (s->dead)
        return;
    /* the client's next command line is due from its last reply */
    s->clock.line_ms = session_now_ms();
    struct evbuffer *out = bufferevent_get_output(s->bev);
    evbuffer_add_vprintf(out, fmt, ap);
    evbuffer_add(out, "\r\n", 2);
}

__attribute__((format(printf, 2, 3))) void session_reply(struct session *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    session_vreply(s, fmt, ap);
    va_end(ap);
}

static void on_write(struct bufferevent *bev, void *arg)
{
    struct session *s = arg;
    /* the TLS bufferevent runs this callback deferred: a reply queued since
     * then may still be waiting, so look before closing */
    if (s->st != ST_CLOSING || evbuffer_get_length(bufferevent_get_output(bev)) > 0)
        return;
    struct bufferevent *under = bufferevent_get_underlying(bev);
    if (under && evbuffer_get_length(bufferevent_get_output(under)) > 0) {
        session_close_when_flushed(s); /* the TLS filter handed it on; wait for the socket */
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

void session_close_when_flushed(struct session *s)
{
    session_enter_state(s, ST_CLOSING);
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

/* ---- the one place the state changes ---- */

static const char *const state_names[ST_COUNT] = {
    [ST_INIT] = "init",
    [ST_READY] = "ready",
    [ST_MAIL] = "mail",
    [ST_RCPT] = "rcpt",
    [ST_DATA] = "data",
    [ST_BDAT] = "bdat",
    [ST_BDAT_WAIT] = "bdat_wait",
    [ST_AUTH_PLAIN] = "auth_plain",
    [ST_AUTH_LOGIN_USER] = "auth_login_user",
    [ST_AUTH_LOGIN_PASS] = "auth_login_pass",
    [ST_AUTH_SCRAM] = "auth_scram",
    [ST_AUTH_CHECK] = "auth_check",
    [ST_COMMIT] = "commit",
    [ST_TLS] = "tls",
    [ST_CLOSING] = "closing",
};

const char *session_state_name(enum session_state st)
{
    return st < ST_COUNT && state_names[st] ? state_names[st] : "?";
}

void session_enter_state(struct session *s, enum session_state st)
{
    if (s->st != st && log_wants(LOG_DEBUG))
        log_event(LOG_DEBUG, "smtp.state", "client_ip", "%s", s->ip, "from", "%s",
                  session_state_name(s->st), "to", "%s", session_state_name(st), NULL);
    s->st = st;
}

/* ---- transaction ---- */

static void transaction_reset(struct session *s)
{
    submit_free(s->tx);
    s->tx = NULL;
    memset(&s->mp, 0, sizeof s->mp);
    s->data_total = 0;
    s->clock.txn_ms = 0;
    s->bdat_used = s->bdat_last = s->bdat_failed = false;
    s->bdat_error = NULL;
    s->bdat_left = 0;
}

void session_after_transaction(struct session *s)
{
    transaction_reset(s);
    session_enter_state(s, s->helo[0] ? ST_READY : ST_INIT);
    if (s->r->draining) {
        session_reply(s, "421 4.3.2 %s Service shutting down, closing connection",
                      s->r->cfg->hostname);
        session_close_when_flushed(s);
    }
}

/* ---- helpers ---- */

bool session_auth_offered(const struct session *s)
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
const struct cred *session_sender_cred(const struct session *s)
{
    return s->authed ? s->cred : NULL;
}

void session_account(struct session *s, enum acct_event ev, const char *reason, long long bytes)
{
    if (s->r->accounting)
        accounting_add(s->r->accounting, s->authed ? s->auth_user : NULL, ev, reason, bytes);
}

/* Sends a refusal and reports it: one event, one counter, one accounting
 * row per refused command or message. */
void session_refused(struct session *s, enum reject_reason why, const char *line)
{
    session_reply(s, "%s", line);
    events_reject(s->r, s->ip, s->authed ? s->auth_user : NULL, why, line);
    session_account(s, ACCT_REJECTED, reject_reason_name(why), 0);
}

void session_policy_refused(struct session *s, const struct authz_refusal *ref)
{
    session_refused(s, ref->reason, ref->reply);
}

void session_logout(struct session *s)
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
bool session_too_many_errors(struct session *s)
{
    if (++s->bad_commands < s->r->cfg->max_bad_commands)
        return false;
    session_reply(s, "421 4.7.0 %s Too many errors, closing connection", s->r->cfg->hostname);
    log_event(LOG_WARN, "smtp.too_many_errors", "client_ip", "%s", s->ip, NULL);
    session_close_when_flushed(s);
    return true;
}

/* A rejected command: its own reply, or the 421 once there were too many.
 * Returns true when the session is closing. */
__attribute__((format(printf, 2, 3))) bool session_command_error(struct session *s, const char *fmt,
                                                                 ...)
{
    if (session_too_many_errors(s))
        return true;
    va_list ap;
    va_start(ap, fmt);
    session_vreply(s, fmt, ap);
    va_end(ap);
    return false;
}

void session_set_timeout(struct session *s, int seconds)
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
void session_deadline_arm(struct session *s)
{
    if (!s->deadline)
        return;
    enum deadline_kind kind;
    int64_t due = deadline_due(s->r->cfg, deadline_phase(s), &s->clock, &kind);
    int64_t wait = kind == DEADLINE_NONE ? (int64_t)s->r->cfg->command_deadline * 1000
                                         : due - session_now_ms();
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
    if (s->dead || kind == DEADLINE_NONE || session_now_ms() < due) {
        session_deadline_arm(s);
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
    session_refused(s, REJECT_DEADLINE, line);
    session_close_when_flushed(s);
}

static void addr_reply(struct session *s, enum smtp_addr_error e, bool is_mail)
{
    const char *text = smtp_addr_error_text(e);
    switch (e) {
    case SMTP_ADDR_MISSING_PREFIX:
        session_command_error(s, "501 5.5.4 Syntax: %s",
                              is_mail ? "MAIL FROM:<address>" : "RCPT TO:<address>");
        break;
    case SMTP_ADDR_SOURCE_ROUTE:
        session_command_error(s, "553 5.1.3 Source routes are not accepted: %s", text);
        break;
    case SMTP_ADDR_UTF8_NO_SMTPUTF8:
        session_command_error(s,
                              "553 5.6.7 Non-ASCII address needs the SMTPUTF8 parameter on MAIL");
        break;
    case SMTP_ADDR_BAD_UTF8:
        session_command_error(s, "501 5.6.7 Malformed UTF-8 in address");
        break;
    case SMTP_ADDR_BAD_PARAM:
    case SMTP_ADDR_DUP_PARAM:
        session_command_error(s, "555 5.5.4 %s", text);
        break;
    case SMTP_ADDR_NULL_RCPT:
        session_command_error(s, "501 5.1.3 The null address <> cannot be a recipient");
        break;
    default:
        session_command_error(s, "501 %s Bad %s address syntax: %s", is_mail ? "5.1.7" : "5.1.3",
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
        session_command_error(s, "501 5.5.4 Syntax: %s domain or [address-literal]",
                              esmtp ? "EHLO" : "HELO");
        return;
    }
    memcpy(s->helo, c->arg, c->arg_len);
    s->helo[c->arg_len] = 0;
    s->esmtp = esmtp;
    transaction_reset(s);
    session_enter_state(s, ST_READY);
    if (!esmtp) {
        session_reply(s, "250 %s", cfg->hostname);
        return;
    }
    session_reply(s, "250-%s Hello %s [%s]", cfg->hostname, s->helo, s->ip);
    session_reply(s, "250-PIPELINING");
    session_reply(s, "250-SIZE %lld", authz_size_limit(session_sender_cred(s), cfg));
    session_reply(s, "250-8BITMIME");
    session_reply(s, "250-SMTPUTF8");
    session_reply(s, "250-CHUNKING");
    if (!s->tls && s->r->tls)
        session_reply(s, "250-STARTTLS");
    /* a client certificate already said who this is */
    if (session_auth_offered(s) && !s->authed)
        session_reply(s, "250-AUTH PLAIN LOGIN%s", s->r->creds ? " SCRAM-SHA-256" : "");
    session_reply(s, "250 ENHANCEDSTATUSCODES");
}

/* The credential's rules for a new transaction, in order: still valid
 * (changes made with `sluice creds` count from the next MAIL on), sender,
 * declared size, rate, quota. */
/* The intake transaction's view of who is sending. */
static void session_origin(const struct session *s, struct submit_origin *o)
{
    *o = (struct submit_origin){.door = "smtp",
                                .client_ip = s->ip,
                                .helo = s->helo,
                                .auth_user = s->authed ? s->auth_user : NULL,
                                .auth_method = s->authed ? s->auth_method : NULL,
                                .tls_desc = s->tls ? s->tls_desc : NULL,
                                .cred = session_sender_cred(s),
                                .esmtp = s->esmtp};
}

static void cmd_mail(struct session *s, const struct smtp_command *c)
{
    const struct config *cfg = s->r->cfg;
    if (s->r->draining) {
        session_reply(s, "421 4.3.2 %s Service shutting down, try again later", cfg->hostname);
        session_close_when_flushed(s);
        return;
    }
    if (!s->authed && !s->relay_net) {
        log_event(LOG_WARN, "policy.rejected", "client_ip", "%s", s->ip, "reason", "%s",
                  "unauthenticated", NULL);
        if (!session_too_many_errors(s))
            session_refused(s, REJECT_UNAUTHENTICATED,
                            "530 5.7.0 Authentication required: log in with AUTH before sending");
        return;
    }
    struct smtp_path from;
    enum smtp_addr_error e = smtp_parse_mail(c->arg, c->arg_len, &from, &s->mp);
    if (e != SMTP_ADDR_OK) {
        addr_reply(s, e, true);
        memset(&s->mp, 0, sizeof s->mp);
        return;
    }
    if (s->authed && policy_refresh(s->r, &s->cred, &s->cred_gen) < 0) {
        char line[AUTHZ_REPLY_MAX];
        snprintf(line, sizeof line,
                 "530 5.7.0 Credential '%s' was revoked or deleted; authentication required",
                 s->auth_user);
        session_refused(s, REJECT_UNAUTHENTICATED, line);
        session_logout(s);
        memset(&s->mp, 0, sizeof s->mp);
        return;
    }
    struct submit_origin o;
    session_origin(s, &o);
    struct submit_tx *tx = submit_begin(s->r, &o);
    struct authz_refusal ref;
    int r = tx ? submit_mail(tx, &from, &s->mp, &ref) : SUBMIT_ENOMEM;
    if (r != SUBMIT_OK) {
        submit_free(tx);
        memset(&s->mp, 0, sizeof s->mp);
        if (r == SUBMIT_ENOMEM)
            session_reply(s, "452 4.3.0 Out of memory");
        else
            session_reply(s, "%s", ref.reply);
        return;
    }
    s->tx = tx;
    s->clock.txn_ms = session_now_ms();
    session_deadline_arm(s);
    session_enter_state(s, ST_MAIL);
    session_reply(s, "250 2.1.0 Sender ok");
}

static void cmd_rcpt(struct session *s, const struct smtp_command *c)
{
    struct smtp_path p;
    struct smtp_rcpt_params rp;
    enum smtp_addr_error e = smtp_parse_rcpt(c->arg, c->arg_len, s->mp.smtputf8, &p, &rp);
    if (e != SMTP_ADDR_OK) {
        addr_reply(s, e, false);
        return;
    }
    struct authz_refusal ref;
    int r = submit_rcpt(s->tx, &p, &ref);
    if (r == SUBMIT_ENOMEM) {
        session_reply(s, "452 4.3.0 Out of memory");
        return;
    }
    if (r != SUBMIT_OK) {
        session_reply(s, "%s", ref.reply);
        return;
    }
    session_enter_state(s, ST_RCPT);
    session_reply(s, "250 2.1.5 Recipient ok");
}

static void start_tls(struct session *s);

static void cmd_starttls(struct session *s, const struct smtp_command *c)
{
    if (s->tls || !s->r->tls) {
        session_reply(s, "503 5.5.1 TLS already active");
        return;
    }
    if (c->arg_len) {
        session_reply(s, "501 5.5.4 STARTTLS takes no arguments");
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
    session_reply(s, "220 2.0.0 Ready to start TLS");
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
    session_command_error(s, "503 5.5.1 %s", why);
}

static void handle_command(struct session *s, const char *line, size_t len)
{
    struct smtp_command c;
    if (smtp_command_parse(line, len, &c) < 0 || c.verb == SMTP_VERB_UNKNOWN) {
        session_command_error(s, "500 5.5.2 Command not recognized");
        return;
    }
    if (!(state_allows[s->st] & (1u << c.verb))) {
        if (c.verb == SMTP_VERB_BDAT) {
            /* RFC 3030 2: the chunk must still be read before replying */
            enum session_state before = s->st;
            session_cmd_bdat(s, &c);
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
            session_reply(s, "503 5.5.1 DATA cannot follow BDAT");
            break;
        }
        session_cmd_data(s, &c);
        break;
    case SMTP_VERB_BDAT:
        session_cmd_bdat(s, &c);
        break;
    case SMTP_VERB_RSET:
        transaction_reset(s);
        if (s->st != ST_INIT)
            session_enter_state(s, ST_READY);
        session_reply(s, "250 2.0.0 Ok");
        break;
    case SMTP_VERB_NOOP:
        session_reply(s, "250 2.0.0 Ok");
        break;
    case SMTP_VERB_QUIT:
        session_reply(s, "221 2.0.0 %s Bye", s->r->cfg->hostname);
        session_close_when_flushed(s);
        break;
    case SMTP_VERB_VRFY:
        session_reply(s,
                      "252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery");
        break;
    case SMTP_VERB_EXPN:
        session_reply(s, "502 5.5.1 EXPN not supported");
        break;
    case SMTP_VERB_HELP:
        session_reply(s,
                      "214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP "
                      "STARTTLS AUTH");
        break;
    case SMTP_VERB_STARTTLS:
        cmd_starttls(s, &c);
        break;
    case SMTP_VERB_AUTH:
        session_cmd_auth(s, &c);
        break;
    default:
        session_command_error(s, "500 5.5.2 Command not recognized");
        break;
    }
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
        session_auth_continuation(s, line, len);
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
        session_scram_end(s);
        session_enter_state(s, ST_READY);
    }
    if (session_too_many_errors(s))
        return true;
    char line[128];
    if (in_auth)
        snprintf(line, sizeof line,
                 "500 5.5.6 Authentication exchange line is too long (limit "
                 "%zu octets); authentication cancelled",
                 limit);
    else
        snprintf(line, sizeof line, "500 5.5.6 Line too long (limit %zu octets)", limit);
    session_refused(s, REJECT_LINE_TOO_LONG, line);
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

void session_process_input(struct session *s)
{
    struct evbuffer *in = bufferevent_get_input(s->bev);
    while (!session_paused(s)) {
        if (s->st == ST_DATA || s->st == ST_BDAT) {
            if (!session_consume_content(s, in))
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
            if (session_command_error(s, "500 5.5.2 Command lines must end with CRLF"))
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
    session_process_input(arg);
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
        session_set_identity(s, "client-cert", c, gen);
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
        session_enter_state(s, ST_INIT);
        s->clock.line_ms = session_now_ms();
        const char *sni = ssl ? SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name) : NULL;
        log_event(LOG_INFO, "tls.established", "client_ip", "%s", s->ip, "tls", "%s", s->tls_desc,
                  "sni", "%s", sni ? sni : "", NULL);
        tls_client_identity(s, ssl);
        session_process_input(s);
        return;
    }
    if (what & BEV_EVENT_TIMEOUT) {
        log_event(LOG_INFO, "smtp.timeout", "client_ip", "%s", s->ip, NULL);
        if (s->st == ST_TLS) {
            session_close(s); /* mid-handshake: a reply could never leave */
            return;
        }
        session_reply(s, "421 4.4.2 %s Timeout exceeded, closing connection", s->r->cfg->hostname);
        session_close_when_flushed(s);
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
    session_set_timeout(s, s->r->cfg->command_timeout);
}

static void start_tls(struct session *s)
{
    SSL *ssl = SSL_new(s->r->tls);
    if (!ssl) {
        session_close_when_flushed(s);
        return;
    }
    struct bufferevent *tb = bufferevent_openssl_filter_new(
        s->r->base, s->bev, ssl, BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
    if (!tb) {
        SSL_free(ssl);
        session_close_when_flushed(s);
        return;
    }
    bufferevent_openssl_set_allow_dirty_shutdown(tb, 1);
    /* RFC 3207 4.2: after TLS the client starts over, knowing nothing */
    s->helo[0] = 0;
    s->esmtp = false;
    session_logout(s);
    transaction_reset(s);
    session_enter_state(s, ST_TLS);
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

void session_close(struct session *s)
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
    if (s->auth_users)
        users_free(s->auth_users);
    explicit_bzero(s->check_pass, sizeof s->check_pass);
    creds_free_cred(s->check.cred);
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
        session_enter_state(s, ST_TLS);
    } else {
        bev = bufferevent_socket_new(r->base, fd, BEV_OPT_CLOSE_ON_FREE);
        session_enter_state(s, ST_INIT);
    }
    if (!bev) {
        evutil_closesocket(fd);
        s->bev = NULL;
        session_close(s);
        return;
    }
    attach(s, bev);
    s->deadline = evtimer_new(r->base, on_deadline, s);
    s->clock.line_ms = session_now_ms();
    session_deadline_arm(s);
    log_event(LOG_DEBUG, "connection.open", "client_ip", "%s", s->ip, "implicit_tls", "#%d",
              (int)implicit_tls, NULL);
    session_reply(s, "220 %s ESMTP Sluice ready", r->cfg->hostname);
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
    session_reply(oldest, "421 4.7.0 %s Too many unauthenticated connections, closing the oldest",
                  r->cfg->hostname);
    session_close_when_flushed(oldest);
    return true;
}

void session_drain_all(struct relay *r)
{
    struct session *s = r->session_list;
    while (s) {
        struct session *next = s->next;
        if (s->st == ST_INIT || s->st == ST_READY) {
            session_reply(s, "421 4.3.2 %s Service shutting down, closing connection",
                          r->cfg->hostname);
            session_close_when_flushed(s);
        }
        s = next;
    }
}

void session_close_all(struct relay *r)
{
    while (r->session_list)
        session_close(r->session_list);
}
