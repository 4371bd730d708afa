/* SMTP client of the delivery engine: one connection to one upstream, from
 * DNS resolution through TLS and AUTH to any number of transactions. Every
 * step is a state of enum client_state; replies are dispatched on it in
 * handle_reply(). Failures before a message is accepted are reported with a
 * category so the engine can fail over instead of bouncing. This file has
 * the connection's life and I/O; set-up (client_setup.c) and the mail
 * transaction (client_transaction.c) are the other two parts. */
#include "deliver/client.h"
#include "deliver/client_int.h"
#include "core/log.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/util.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "net/tls_client.h"

/* RFC 5321 4.5.3.2 minimum timeouts, in milliseconds. */
#define TIMEOUT_INITIAL_MS (5 * 60 * 1000)     /* 4.5.3.2.1 */
#define TIMEOUT_MAIL_MS (5 * 60 * 1000)        /* 4.5.3.2.2 */
#define TIMEOUT_RCPT_MS (5 * 60 * 1000)        /* 4.5.3.2.3 */
#define TIMEOUT_DATA_INIT_MS (2 * 60 * 1000)   /* 4.5.3.2.4 */
#define TIMEOUT_DATA_BLOCK_MS (3 * 60 * 1000)  /* 4.5.3.2.5 */
#define TIMEOUT_DATA_FINAL_MS (10 * 60 * 1000) /* 4.5.3.2.6 */
#define TIMEOUT_COMMAND_MS (5 * 60 * 1000)
#define TIMEOUT_CONNECT_MS (30 * 1000)
#define TIMEOUT_QUIT_MS (10 * 1000)

static const char *const state_names[] = {
    [ST_START] = "start",
    [ST_RESOLVING] = "DNS resolution",
    [ST_CONNECTING] = "connect",
    [ST_TLS_IMPLICIT] = "TLS handshake",
    [ST_GREETING] = "greeting",
    [ST_EHLO] = "EHLO",
    [ST_HELO] = "HELO",
    [ST_STARTTLS] = "STARTTLS",
    [ST_TLS_STARTTLS] = "TLS handshake",
    [ST_EHLO_TLS] = "EHLO",
    [ST_AUTH] = "AUTH",
    [ST_AUTH_LOGIN] = "AUTH",
    [ST_AUTH_LOGIN_USER] = "AUTH",
    [ST_AUTH_XOAUTH2] = "AUTH",
    [ST_READY] = "idle",
    [ST_LOCAL_REJECT] = "idle",
    [ST_RSET] = "RSET",
    [ST_MAIL] = "MAIL",
    [ST_RCPT] = "RCPT",
    [ST_DATA] = "DATA",
    [ST_DOT] = "end of data",
    [ST_QUIT] = "QUIT",
    [ST_DEAD] = "closed",
};

/* Every change of c->state goes through here (logged as
 * smtp_client.state at debug). The state names the reply awaited; what goes
 * out next follows from it and from whether the server pipelines. */
void client_enter_state(struct smtp_client *c, enum client_state st)
{
    if (c->state != st && log_wants(LOG_DEBUG))
        log_event(LOG_DEBUG, "smtp_client.state", "host", "%s", c->host ? c->host : "", "from",
                  "%s", state_names[c->state], "to", "%s", state_names[st], NULL);
    c->state = st;
}

static void handle_reply(struct smtp_client *c);
static void destroy(struct smtp_client *c);

const char *smtp_client_errcat_name(enum smtp_client_errcat cat)
{
    switch (cat) {
    case SMTP_CLIENT_ERR_CONNECT:
        return "connect";
    case SMTP_CLIENT_ERR_TLS:
        return "tls";
    case SMTP_CLIENT_ERR_AUTH:
        return "auth";
    case SMTP_CLIENT_ERR_PROTOCOL:
        return "protocol";
    case SMTP_CLIENT_ERR_TIMEOUT:
        return "timeout";
    case SMTP_CLIENT_ERR_CLOSED:
        return "closed";
    }
    return "unknown";
}

static unsigned pick(unsigned v, unsigned dflt)
{
    return v != 0 ? v : dflt;
}

void client_enter(struct smtp_client *c)
{
    c->depth++;
}

/* Returns false when c was freed on the way out. */
bool client_leave(struct smtp_client *c)
{
    if (--c->depth == 0 && c->free_pending) {
        destroy(c);
        return false;
    }
    return true;
}

bool client_alive(const struct smtp_client *c)
{
    return c->state != ST_DEAD && !c->free_pending;
}

void client_arm(struct smtp_client *c, unsigned ms)
{
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    evtimer_add(c->timer, &tv);
}

void client_disarm(struct smtp_client *c)
{
    evtimer_del(c->timer);
}

void client_wipe_secret(struct smtp_client *c)
{
    if (c->secret != NULL) {
        OPENSSL_cleanse(c->secret, strlen(c->secret));
        free(c->secret);
        c->secret = NULL;
    }
}

/* Releases the network side; the struct stays for the caller to free. */
static void teardown(struct smtp_client *c)
{
    if (c->dns_req != NULL) {
        struct evdns_getaddrinfo_request *req = c->dns_req;
        c->dns_req = NULL;
        evdns_getaddrinfo_cancel(req);
    }
    if (c->addrs != NULL) {
        evutil_freeaddrinfo(c->addrs);
        c->addrs = NULL;
        c->addr_next = NULL;
    }
    if (c->timer != NULL)
        evtimer_del(c->timer);
    if (c->deferred != NULL)
        event_del(c->deferred);
    if (c->bev != NULL) {
        /* Disabling first removes the events at once, so the fd may be
         * closed below even if libevent finalizes the bufferevent later. */
        bufferevent_disable(c->bev, EV_READ | EV_WRITE);
        bufferevent_free(c->bev);
        c->bev = NULL;
    }
    if (c->fd >= 0) {
        evutil_closesocket(c->fd);
        c->fd = -1;
    }
    client_wipe_secret(c);
    client_enter_state(c, ST_DEAD);
}

static void destroy(struct smtp_client *c)
{
    teardown(c);
    if (c->timer != NULL)
        event_free(c->timer);
    if (c->deferred != NULL)
        event_free(c->deferred);
    tls_client_ctx_free(c->tls_ctx);
    free(c->host);
    free(c->server_name);
    free(c->helo_name);
    free(c->ca_file);
    free(c->username);
    free(c->pin_text);
    free(c->rcpt_res);
    free(c);
}

/* After QUIT the session ended as SMTP intends; marking the TLS layer as
 * shut down keeps its session resumable (OpenSSL discards sessions of
 * connections freed mid-stream). No close_notify is written: the peer may
 * already be gone. */
static void quit_done(struct smtp_client *c)
{
    if (c->tls_active && c->bev != NULL) {
        SSL *ssl = bufferevent_openssl_get_ssl(c->bev);
        if (ssl != NULL)
            SSL_set_shutdown(ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
    }
    smtp_client_free(c);
}

static bool in_transaction(enum client_state st)
{
    return st == ST_RSET || st == ST_MAIL || st == ST_RCPT || st == ST_DATA || st == ST_DOT;
}

void client_fail(struct smtp_client *c, enum smtp_client_errcat cat, bool with_reply,
                 const char *fmt, ...)
{
    if (!client_alive(c))
        return;
    if (c->quitting) {
        teardown(c);
        smtp_client_free(c);
        return;
    }
    struct smtp_client_error err;
    memset(&err, 0, sizeof(err));
    err.category = cat;
    err.in_transaction = in_transaction(c->state);
    /* A reply to "." (even 421) settles the outcome: not accepted. */
    err.outcome_unknown = c->state == ST_DOT && !c->discard_dot && !with_reply;
    if (with_reply) {
        err.code = c->reply.code;
        memcpy(err.enhanced, c->reply.enhanced, sizeof(err.enhanced));
        memcpy(err.text, c->reply.text, sizeof(err.text));
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err.reason, sizeof(err.reason), fmt, ap);
    va_end(ap);
    teardown(c);
    if (c->cb.on_error != NULL)
        c->cb.on_error(c, &err, c->cb_arg);
}

/* A reply that is not the expected one, formatted for reasons. */
#define REPLY_FMT "%d%s%s %s"
#define REPLY_ARGS(r) (r)->code, (r)->enhanced[0] ? " " : "", (r)->enhanced, (r)->text

void client_fail_reply(struct smtp_client *c, enum smtp_client_errcat cat, const char *what)
{
    if (c->reply.code == 421)
        cat = SMTP_CLIENT_ERR_PROTOCOL;
    client_fail(c, cat, true, "%s: " REPLY_FMT, what, REPLY_ARGS(&c->reply));
}

struct evbuffer *client_out(struct smtp_client *c)
{
    return bufferevent_get_output(c->bev);
}

void client_send_line(struct smtp_client *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    evbuffer_add_vprintf(client_out(c), fmt, ap);
    va_end(ap);
    evbuffer_add(client_out(c), "\r\n", 2);
}

/* ---- connection ---------------------------------------------------- */

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct smtp_client *c = arg;
    client_enter(c);
    if (c->state == ST_QUIT) {
        smtp_client_free(c);
    } else {
        client_fail(c, SMTP_CLIENT_ERR_TIMEOUT, false, "timeout in %s (%s:%d)",
                    state_names[c->state], c->host, c->port);
    }
    client_leave(c);
}

void client_on_event(struct bufferevent *bev, short what, void *arg)
{
    struct smtp_client *c = arg;
    int err = EVUTIL_SOCKET_ERROR();

    client_enter(c);
    if (c->state == ST_QUIT && (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT))) {
        if (what & BEV_EVENT_EOF)
            quit_done(c);
        else
            smtp_client_free(c);
    } else if (what & BEV_EVENT_CONNECTED) {
        if (c->state == ST_CONNECTING) {
            evutil_freeaddrinfo(c->addrs);
            c->addrs = NULL;
            c->addr_next = NULL;
            client_set_write_timeout(c);
            if (c->tls == CONFIG_TLS_IMPLICIT) {
                client_start_tls(c, ST_TLS_IMPLICIT);
            } else {
                bufferevent_enable(c->bev, EV_READ);
                client_enter_state(c, ST_GREETING);
                client_arm(c, c->to.initial_ms);
            }
        } else if (c->state == ST_TLS_IMPLICIT || c->state == ST_TLS_STARTTLS) {
            client_tls_established(c);
        }
    } else if (c->state == ST_CONNECTING) {
        snprintf(c->connect_err, sizeof(c->connect_err), "%s: %s", c->peer,
                 (what & BEV_EVENT_ERROR) && err != 0 ? strerror(err) : "connection failed");
        client_free_connection(c);
        client_connect_next(c);
    } else if (c->state == ST_TLS_IMPLICIT || c->state == ST_TLS_STARTTLS) {
        client_tls_failed(c);
    } else if (what & BEV_EVENT_TIMEOUT) {
        client_fail(c, SMTP_CLIENT_ERR_TIMEOUT, false,
                    "timeout writing to %s port %d in %s (no progress for %u ms)", c->host, c->port,
                    state_names[c->state], c->to.data_block_ms);
    } else if (what & BEV_EVENT_EOF) {
        client_fail(c, SMTP_CLIENT_ERR_CLOSED, false, "connection closed by %s port %d in %s",
                    c->host, c->port, state_names[c->state]);
    } else if (what & BEV_EVENT_ERROR) {
        unsigned long e = c->tls_active ? bufferevent_get_openssl_error(bev) : 0;
        client_fail(c, SMTP_CLIENT_ERR_CLOSED, false, "connection to %s port %d lost in %s: %s",
                    c->host, c->port, state_names[c->state],
                    e != 0 ? ERR_reason_error_string(e) : (err != 0 ? strerror(err) : "error"));
    }
    client_leave(c);
}

void client_on_read(struct bufferevent *bev, void *arg)
{
    struct smtp_client *c = arg;

    client_enter(c);
    while (client_alive(c) && c->bev == bev) {
        struct evbuffer *in = bufferevent_get_input(bev);
        size_t eol_len = 0;
        struct evbuffer_ptr p = evbuffer_search_eol(in, NULL, &eol_len, EVBUFFER_EOL_LF);
        if (p.pos < 0) {
            if (evbuffer_get_length(in) > SMTP_REPLY_LINE_TOLERANCE)
                client_fail(c, SMTP_CLIENT_ERR_PROTOCOL, false, "reply line too long in %s",
                            state_names[c->state]);
            break;
        }
        size_t raw_len = (size_t)p.pos + eol_len;
        size_t len = (size_t)p.pos;
        if (len > SMTP_REPLY_LINE_TOLERANCE) {
            client_fail(c, SMTP_CLIENT_ERR_PROTOCOL, false, "reply line too long in %s",
                        state_names[c->state]);
            break;
        }
        const char *line = (const char *)evbuffer_pullup(in, (ev_ssize_t)raw_len);
        if (line == NULL) {
            client_fail(c, SMTP_CLIENT_ERR_PROTOCOL, false, "out of memory reading reply");
            break;
        }
        if (len > 0 && line[len - 1] == '\r')
            len--;
        int rc = smtp_reply_feed(&c->reply, line, len);
        if (rc >= 0 && c->reply.lines > 1 && c->reply.code == 250 &&
            (c->state == ST_EHLO || c->state == ST_EHLO_TLS)) {
            struct smtp_reply_line l;
            if (smtp_reply_line_parse(line, len, &l) == 0)
                smtp_ehlo_keyword(l.text, l.text_len, &c->ehlo);
        }
        evbuffer_drain(in, raw_len);
        if (rc < 0) {
            client_fail(c, SMTP_CLIENT_ERR_PROTOCOL, false, "unparseable reply from %s in %s",
                        c->host, state_names[c->state]);
            break;
        }
        if (rc == 1) {
            handle_reply(c);
            smtp_reply_reset(&c->reply);
        }
    }
    client_leave(c);
}

static void handle_reply(struct smtp_client *c)
{
    switch (c->state) {
    case ST_GREETING:
    case ST_EHLO:
    case ST_HELO:
    case ST_STARTTLS:
    case ST_EHLO_TLS:
    case ST_AUTH:
    case ST_AUTH_LOGIN:
    case ST_AUTH_LOGIN_USER:
    case ST_AUTH_XOAUTH2:
        client_setup_reply(c);
        return;
    case ST_RSET:
    case ST_MAIL:
    case ST_RCPT:
    case ST_DATA:
    case ST_DOT:
        client_transaction_reply(c);
        return;
    case ST_QUIT:
        quit_done(c);
        return;
    case ST_READY:
    case ST_LOCAL_REJECT:
        /* Servers announce an idle timeout with 421 before closing. */
        if (c->reply.code == 421)
            client_fail(c, SMTP_CLIENT_ERR_CLOSED, true, "closed while idle: " REPLY_FMT,
                        REPLY_ARGS(&c->reply));
        else
            client_fail_reply(c, SMTP_CLIENT_ERR_PROTOCOL, "unexpected reply while idle");
        return;
    default:
        client_fail_reply(c, SMTP_CLIENT_ERR_PROTOCOL, "unexpected reply");
        return;
    }
}

static void on_deferred(evutil_socket_t fd, short what, void *arg)
{
    struct smtp_client *c = arg;
    client_enter(c);
    if (c->state == ST_START)
        client_start(c);
    else if (c->state == ST_LOCAL_REJECT)
        client_finish_message(c, SMTP_CLIENT_STAGE_LOCAL, false);
    client_leave(c);
}

/* ---- public interface ----------------------------------------------- */

static char *dup_opt(const char *s, bool *ok)
{
    if (s == NULL)
        return NULL;
    char *d = strdup(s);
    if (d == NULL)
        *ok = false;
    return d;
}

struct smtp_client *smtp_client_new(struct event_base *base, struct evdns_base *dns,
                                    const struct smtp_client_opts *opts,
                                    const struct smtp_client_cb *cb, void *cb_arg)
{
    if (base == NULL || opts == NULL || cb == NULL || opts->host == NULL || opts->host[0] == '\0' ||
        opts->port <= 0 || opts->port > 65535)
        return NULL;
    struct smtp_client *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    bool ok = true;
    c->base = base;
    c->dns = dns;
    c->cb = *cb;
    c->cb_arg = cb_arg;
    c->fd = -1;
    client_enter_state(c, ST_START);
    c->host = dup_opt(opts->host, &ok);
    c->server_name = dup_opt(
        opts->server_name != NULL && opts->server_name[0] != '\0' ? opts->server_name : opts->host,
        &ok);
    c->helo_name = dup_opt(
        opts->helo_name != NULL && opts->helo_name[0] != '\0' ? opts->helo_name : "localhost", &ok);
    c->ca_file = dup_opt(opts->ca_file, &ok);
    c->username = dup_opt(opts->username, &ok);
    c->secret = dup_opt(opts->secret, &ok);
    if (opts->pin_sha256 != NULL && opts->pin_sha256[0] != '\0')
        c->pin_text = dup_opt(opts->pin_sha256, &ok);
    c->port = opts->port;
    c->tls = opts->tls;
    c->verify = opts->verify;
    c->auth = opts->auth;
    c->to.connect_ms = pick(opts->timeouts.connect_ms, TIMEOUT_CONNECT_MS);
    c->to.initial_ms = pick(opts->timeouts.initial_ms, TIMEOUT_INITIAL_MS);
    c->to.command_ms = pick(opts->timeouts.command_ms, TIMEOUT_COMMAND_MS);
    c->to.mail_ms = pick(opts->timeouts.mail_ms, TIMEOUT_MAIL_MS);
    c->to.rcpt_ms = pick(opts->timeouts.rcpt_ms, TIMEOUT_RCPT_MS);
    c->to.data_init_ms = pick(opts->timeouts.data_init_ms, TIMEOUT_DATA_INIT_MS);
    c->to.data_block_ms = pick(opts->timeouts.data_block_ms, TIMEOUT_DATA_BLOCK_MS);
    c->to.data_final_ms = pick(opts->timeouts.data_final_ms, TIMEOUT_DATA_FINAL_MS);
    c->to.quit_ms = pick(opts->timeouts.quit_ms, TIMEOUT_QUIT_MS);
    if (opts->tls_ctx != NULL)
        c->tls_ctx = tls_client_ctx_ref(opts->tls_ctx);
    c->timer = evtimer_new(base, on_timer, c);
    c->deferred = event_new(base, -1, 0, on_deferred, c);
    smtp_reply_reset(&c->reply);
    if (!ok || c->timer == NULL || c->deferred == NULL) {
        destroy(c);
        return NULL;
    }
    event_active(c->deferred, EV_TIMEOUT, 1);
    return c;
}

void smtp_client_quit(struct smtp_client *c)
{
    if (c == NULL)
        return;
    if (c->state != ST_READY || c->free_pending || c->bev == NULL) {
        smtp_client_free(c);
        return;
    }
    memset(&c->cb, 0, sizeof(c->cb));
    c->quitting = true;
    client_send_line(c, "QUIT");
    client_enter_state(c, ST_QUIT);
    client_arm(c, c->to.quit_ms);
}

void smtp_client_free(struct smtp_client *c)
{
    if (c == NULL)
        return;
    if (c->depth > 0) {
        teardown(c);
        c->free_pending = true;
        return;
    }
    destroy(c);
}

bool smtp_client_is_idle(const struct smtp_client *c)
{
    return c->state == ST_READY && !c->quitting && !c->free_pending;
}

const struct smtp_ehlo *smtp_client_extensions(const struct smtp_client *c)
{
    return &c->ehlo;
}

const char *smtp_client_tls_info(const struct smtp_client *c)
{
    return c->tls_active ? c->tls_info : "";
}

unsigned long smtp_client_messages_sent(const struct smtp_client *c)
{
    return c->sent;
}
