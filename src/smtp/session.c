/* The SMTP server session. Input is processed line by line (or as DATA/BDAT
 * content) straight from the bufferevent's input buffer; replies accumulate in
 * the output buffer and leave together, which is how pipelined clients get
 * one write per batch. While a check runs off the loop (AUTH) or the spool is
 * committing, input stays buffered and is resumed afterwards. */
#include "smtp/session.h"

#include "smtp/session_int.h"

#include "core/config.h"
#include "core/log.h"
#include "core/relay.h"
#include "intake/submit.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
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
    if (s->dead || !s->bev)
        return; /* gone, or a handshake thread has the connection */
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

void session_transaction_reset(struct session *s)
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
    session_transaction_reset(s);
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
    if (!s->bev)
        return; /* a handshake thread has the connection */
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

void session_on_deadline(evutil_socket_t fd, short what, void *arg)
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
    session_transaction_reset(s);
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
    session_start_tls(s);
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
        session_transaction_reset(s);
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
    if (!s->bev)
        return;
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
