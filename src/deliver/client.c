/* SMTP client of the delivery engine: one connection to one upstream, from
 * DNS resolution through TLS and AUTH to any number of transactions. Every
 * step is a state of enum client_state; replies are dispatched on it in
 * handle_reply(). Failures before a message is accepted are reported with a
 * category so the engine can fail over instead of bouncing. */
#include "deliver/client.h"
#include "core/log.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/util.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "core/base64.h"
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

/* Body pieces at least this long are referenced from the caller's buffer
 * instead of copied; shorter ones are cheaper to copy than a chain. */
#define BODY_REFERENCE_MIN 2048

/* RFC 5321 4.5.3.1.3: a path is at most 256 octets. Longer addresses are
 * refused locally rather than sent. */
#define SMTP_PATH_MAX 256

enum client_state {
    ST_START,           /* deferred start pending */
    ST_RESOLVING,       /* DNS */
    ST_CONNECTING,      /* TCP, one address after the other */
    ST_TLS_IMPLICIT,    /* handshake on connect (port 465) */
    ST_GREETING,        /* waiting for 220 */
    ST_EHLO,            /* EHLO sent (in clear for STARTTLS) */
    ST_HELO,            /* fallback when EHLO is refused */
    ST_STARTTLS,        /* STARTTLS sent, waiting for 220 */
    ST_TLS_STARTTLS,    /* handshake after STARTTLS */
    ST_EHLO_TLS,        /* EHLO again inside TLS (RFC 3207 4.2) */
    ST_AUTH,            /* waiting for 235 (or an XOAUTH2 334 error) */
    ST_AUTH_LOGIN,      /* waiting for the 334 user name prompt */
    ST_AUTH_LOGIN_USER, /* user name sent, waiting for the password prompt */
    ST_AUTH_XOAUTH2,    /* answered an XOAUTH2 error challenge, waiting */
    ST_READY,           /* idle, between transactions */
    ST_LOCAL_REJECT,    /* message refused here, result being delivered */
    ST_RSET,
    ST_MAIL,
    ST_RCPT,
    ST_DATA,
    ST_DOT, /* body and "." sent, waiting for the final reply */
    ST_QUIT,
    ST_DEAD,
};

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

struct smtp_client {
    struct event_base *base;
    struct evdns_base *dns;
    struct smtp_client_cb cb;
    void *cb_arg;
    enum client_state state;

    /* Options, copied. */
    char *host;
    char *server_name;
    char *helo_name;
    char *ca_file;
    char *username;
    char *secret;
    char *pin_text;
    int port;
    enum config_tls_mode tls;
    enum config_tls_verify verify;
    enum config_auth_mech auth;
    struct smtp_client_timeouts to;
    struct tls_client_ctx *tls_ctx;
    struct tls_client_pins pins;

    /* Connection. */
    struct evdns_getaddrinfo_request *dns_req;
    struct evutil_addrinfo *addrs;
    struct evutil_addrinfo *addr_next;
    char peer[INET6_ADDRSTRLEN + 8];
    char connect_err[160];
    evutil_socket_t fd; /* ours until a TLS bufferevent takes it over */
    struct bufferevent *bev;
    bool tls_active;
    char tls_info[96];
    struct event *timer;
    struct event *deferred;
    struct smtp_reply reply;
    struct smtp_ehlo ehlo;

    /* Transaction. */
    struct smtp_client_msg msg;
    bool pipelined;
    bool needs_rset;
    bool mail_ok;
    bool discard_dot;
    bool smtputf8;
    size_t rcpt_replied;
    struct smtp_client_rcpt_result *rcpt_res;
    size_t rcpt_cap;
    struct smtp_client_result result;
    unsigned long sent;

    /* Callback nesting: a free requested inside a callback waits for it. */
    int depth;
    bool free_pending;
    bool quitting;
};

/* Every change of c->state goes through here (logged as
 * smtp_client.state at debug). The state names the reply awaited; what goes
 * out next follows from it and from whether the server pipelines. */
static void client_enter_state(struct smtp_client *c, enum client_state st)
{
    if (c->state != st && log_wants(LOG_DEBUG))
        log_event(LOG_DEBUG, "smtp_client.state", "host", "%s", c->host ? c->host : "", "from",
                  "%s", state_names[c->state], "to", "%s", state_names[st], NULL);
    c->state = st;
}

static void handle_reply(struct smtp_client *c);
static void on_read(struct bufferevent *bev, void *arg);
static void on_event(struct bufferevent *bev, short what, void *arg);
static void connect_next(struct smtp_client *c);
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

static void enter(struct smtp_client *c)
{
    c->depth++;
}

/* Returns false when c was freed on the way out. */
static bool leave(struct smtp_client *c)
{
    if (--c->depth == 0 && c->free_pending) {
        destroy(c);
        return false;
    }
    return true;
}

static bool alive(const struct smtp_client *c)
{
    return c->state != ST_DEAD && !c->free_pending;
}

static void arm(struct smtp_client *c, unsigned ms)
{
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    evtimer_add(c->timer, &tv);
}

static void disarm(struct smtp_client *c)
{
    evtimer_del(c->timer);
}

static void wipe_secret(struct smtp_client *c)
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
    wipe_secret(c);
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

/* Ends the connection and reports why. with_reply: attach the reply just
 * received. */
static void fail(struct smtp_client *c, enum smtp_client_errcat cat, bool with_reply,
                 const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static void fail(struct smtp_client *c, enum smtp_client_errcat cat, bool with_reply,
                 const char *fmt, ...)
{
    if (!alive(c))
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

static void fail_reply(struct smtp_client *c, enum smtp_client_errcat cat, const char *what)
{
    if (c->reply.code == 421)
        cat = SMTP_CLIENT_ERR_PROTOCOL;
    fail(c, cat, true, "%s: " REPLY_FMT, what, REPLY_ARGS(&c->reply));
}

static struct evbuffer *out(struct smtp_client *c)
{
    return bufferevent_get_output(c->bev);
}

static void send_line(struct smtp_client *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void send_line(struct smtp_client *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    evbuffer_add_vprintf(out(c), fmt, ap);
    va_end(ap);
    evbuffer_add(out(c), "\r\n", 2);
}

static void cleanse_and_free(const void *data, size_t len, void *arg)
{
    OPENSSL_cleanse((void *)data, len);
    free((void *)data);
}

/* Queues a line holding credentials; the copy in the buffer is wiped once
 * written. Takes ownership of line (allocated, len bytes incl. CRLF). */
static int send_secret_line(struct smtp_client *c, char *line, size_t len)
{
    if (evbuffer_add_reference(out(c), line, len, cleanse_and_free, NULL) < 0) {
        cleanse_and_free(line, len, NULL);
        return -1;
    }
    return 0;
}

/* "prefix" + base64(raw) + CRLF, as a secret line. */
static int send_b64_secret(struct smtp_client *c, const char *prefix, const char *raw,
                           size_t raw_len)
{
    size_t plen = strlen(prefix);
    size_t cap = plen + BASE64_ENCODED_SIZE(raw_len) + 2;
    char *line = malloc(cap);
    if (line == NULL)
        return -1;
    memcpy(line, prefix, plen);
    size_t n = base64_encode(raw, raw_len, line + plen);
    memcpy(line + plen + n, "\r\n", 2);
    return send_secret_line(c, line, plen + n + 2);
}

/* ---- connection ---------------------------------------------------- */

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct smtp_client *c = arg;
    enter(c);
    if (c->state == ST_QUIT) {
        smtp_client_free(c);
    } else {
        fail(c, SMTP_CLIENT_ERR_TIMEOUT, false, "timeout in %s (%s:%d)", state_names[c->state],
             c->host, c->port);
    }
    leave(c);
}

static void on_resolved(int result, struct evutil_addrinfo *res, void *arg)
{
    /* On cancellation the client may be gone: touch nothing. */
    if (result == EVUTIL_EAI_CANCEL) {
        if (res != NULL)
            evutil_freeaddrinfo(res);
        return;
    }
    struct smtp_client *c = arg;
    c->dns_req = NULL;
    enter(c);
    if (result != 0 || res == NULL) {
        if (res != NULL)
            evutil_freeaddrinfo(res);
        fail(c, SMTP_CLIENT_ERR_CONNECT, false, "cannot resolve %s: %s", c->host,
             evutil_gai_strerror(result));
    } else {
        c->addrs = res;
        c->addr_next = res;
        snprintf(c->connect_err, sizeof(c->connect_err), "no usable address");
        connect_next(c);
    }
    leave(c);
}

static void start(struct smtp_client *c)
{
    struct evutil_addrinfo hints;
    char port[8];

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_protocol = IPPROTO_TCP;
    snprintf(port, sizeof(port), "%d", c->port);
    client_enter_state(c, ST_RESOLVING);
    arm(c, c->to.connect_ms);
    if (c->dns != NULL) {
        /* May answer before returning (IP literals, hosts file). */
        struct evdns_getaddrinfo_request *req =
            evdns_getaddrinfo(c->dns, c->host, port, &hints, on_resolved, c);
        if (req != NULL && c->state == ST_RESOLVING)
            c->dns_req = req;
    } else {
        struct evutil_addrinfo *res = NULL;
        int rc = evutil_getaddrinfo(c->host, port, &hints, &res);
        on_resolved(rc, res, c);
    }
}

static void free_connection(struct smtp_client *c)
{
    if (c->bev != NULL) {
        bufferevent_disable(c->bev, EV_READ | EV_WRITE);
        bufferevent_free(c->bev);
        c->bev = NULL;
    }
    if (c->fd >= 0) {
        evutil_closesocket(c->fd);
        c->fd = -1;
    }
}

static void set_write_timeout(struct smtp_client *c)
{
    /* RFC 5321 4.5.3.2.5: the data block timeout, applied to every write. */
    unsigned ms = c->to.data_block_ms;
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    bufferevent_set_timeouts(c->bev, NULL, &tv);
}

static void connect_next(struct smtp_client *c)
{
    while (c->addr_next != NULL) {
        struct evutil_addrinfo *ai = c->addr_next;
        c->addr_next = ai->ai_next;

        char ip[INET6_ADDRSTRLEN] = "?";
        const void *a = ai->ai_family == AF_INET6
                            ? (const void *)&((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr
                            : (const void *)&((struct sockaddr_in *)ai->ai_addr)->sin_addr;
        evutil_inet_ntop(ai->ai_family, a, ip, sizeof(ip));
        snprintf(c->peer, sizeof(c->peer), "%s", ip);

        c->fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
        if (c->fd < 0) {
            snprintf(c->connect_err, sizeof(c->connect_err), "%s: %s", ip, strerror(errno));
            continue;
        }
        /* Commands are small and latency-bound; the final "." goes out with
         * the body tail in one write anyway. */
        int one = 1;
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        c->bev = bufferevent_socket_new(c->base, c->fd, BEV_OPT_DEFER_CALLBACKS);
        if (c->bev == NULL) {
            snprintf(c->connect_err, sizeof(c->connect_err), "%s: out of memory", ip);
            free_connection(c);
            continue;
        }
        bufferevent_setcb(c->bev, on_read, NULL, on_event, c);
        if (bufferevent_socket_connect(c->bev, ai->ai_addr, (int)ai->ai_addrlen) < 0) {
            snprintf(c->connect_err, sizeof(c->connect_err), "%s: %s", ip, strerror(errno));
            free_connection(c);
            continue;
        }
        client_enter_state(c, ST_CONNECTING);
        return;
    }
    fail(c, SMTP_CLIENT_ERR_CONNECT, false, "cannot connect to %s port %d: %s", c->host, c->port,
         c->connect_err);
}

static void start_tls(struct smtp_client *c, enum client_state next)
{
    char err[256];

    if (c->tls_ctx == NULL) {
        c->tls_ctx = tls_client_ctx_new(c->ca_file, err, sizeof(err));
        if (c->tls_ctx == NULL) {
            fail(c, SMTP_CLIENT_ERR_TLS, false, "%s", err);
            return;
        }
    }
    if (c->pin_text != NULL && tls_client_pins_parse(c->pin_text, &c->pins) < 0) {
        fail(c, SMTP_CLIENT_ERR_TLS, false, "malformed certificate pin (want hex SHA-256)");
        return;
    }
    SSL *ssl = tls_client_ssl_new(c->tls_ctx, c->server_name, c->verify == CONFIG_VERIFY_PEER, err,
                                  sizeof(err));
    if (ssl == NULL) {
        fail(c, SMTP_CLIENT_ERR_TLS, false, "%s", err);
        return;
    }
    /* A pin is judged on the certificates of a full handshake; a resumed
     * session does not carry the verified chain a CA pin needs. */
    if (c->pins.n > 0)
        SSL_set_session(ssl, NULL);
    bufferevent_disable(c->bev, EV_READ | EV_WRITE);
    bufferevent_free(c->bev);
    c->bev = bufferevent_openssl_socket_new(c->base, c->fd, ssl, BUFFEREVENT_SSL_CONNECTING,
                                            BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
    if (c->bev == NULL) {
        SSL_free(ssl);
        fail(c, SMTP_CLIENT_ERR_TLS, false, "cannot start TLS: out of memory");
        return;
    }
    c->fd = -1; /* the TLS bufferevent closes it */
    /* Servers often close after QUIT without close_notify. */
    bufferevent_openssl_set_allow_dirty_shutdown(c->bev, 1);
    bufferevent_setcb(c->bev, on_read, NULL, on_event, c);
    set_write_timeout(c);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    client_enter_state(c, next);
    arm(c, c->to.connect_ms);
}

static void send_ehlo(struct smtp_client *c, enum client_state next)
{
    memset(&c->ehlo, 0, sizeof(c->ehlo));
    send_line(c, "EHLO %s", c->helo_name);
    client_enter_state(c, next);
    arm(c, c->to.command_ms);
}

static void tls_established(struct smtp_client *c)
{
    SSL *ssl = bufferevent_openssl_get_ssl(c->bev);
    char reason[256];
    bool verify = c->verify == CONFIG_VERIFY_PEER;

    if (verify && SSL_get_verify_result(ssl) != X509_V_OK) {
        tls_client_describe_failure(ssl, 0, reason, sizeof(reason));
        fail(c, SMTP_CLIENT_ERR_TLS, false, "%s", reason);
        return;
    }
    if (c->pins.n > 0 && tls_client_check_pins(ssl, verify, &c->pins, reason, sizeof(reason)) < 0) {
        fail(c, SMTP_CLIENT_ERR_TLS, false, "%s", reason);
        return;
    }
    c->tls_active = true;
    tls_client_describe(ssl, c->tls_info, sizeof(c->tls_info));
    if (c->state == ST_TLS_IMPLICIT) {
        client_enter_state(c, ST_GREETING);
        arm(c, c->to.initial_ms);
    } else {
        send_ehlo(c, ST_EHLO_TLS);
    }
}

static void tls_failed(struct smtp_client *c)
{
    unsigned long e, first = 0;
    char reason[256];
    while ((e = bufferevent_get_openssl_error(c->bev)) != 0)
        if (first == 0)
            first = e;
    tls_client_describe_failure(bufferevent_openssl_get_ssl(c->bev), first, reason, sizeof(reason));
    fail(c, SMTP_CLIENT_ERR_TLS, false, "%s (%s port %d)", reason, c->host, c->port);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    struct smtp_client *c = arg;
    int err = EVUTIL_SOCKET_ERROR();

    enter(c);
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
            set_write_timeout(c);
            if (c->tls == CONFIG_TLS_IMPLICIT) {
                start_tls(c, ST_TLS_IMPLICIT);
            } else {
                bufferevent_enable(c->bev, EV_READ);
                client_enter_state(c, ST_GREETING);
                arm(c, c->to.initial_ms);
            }
        } else if (c->state == ST_TLS_IMPLICIT || c->state == ST_TLS_STARTTLS) {
            tls_established(c);
        }
    } else if (c->state == ST_CONNECTING) {
        snprintf(c->connect_err, sizeof(c->connect_err), "%s: %s", c->peer,
                 (what & BEV_EVENT_ERROR) && err != 0 ? strerror(err) : "connection failed");
        free_connection(c);
        connect_next(c);
    } else if (c->state == ST_TLS_IMPLICIT || c->state == ST_TLS_STARTTLS) {
        tls_failed(c);
    } else if (what & BEV_EVENT_TIMEOUT) {
        fail(c, SMTP_CLIENT_ERR_TIMEOUT, false,
             "timeout writing to %s port %d in %s (no progress for %u ms)", c->host, c->port,
             state_names[c->state], c->to.data_block_ms);
    } else if (what & BEV_EVENT_EOF) {
        fail(c, SMTP_CLIENT_ERR_CLOSED, false, "connection closed by %s port %d in %s", c->host,
             c->port, state_names[c->state]);
    } else if (what & BEV_EVENT_ERROR) {
        unsigned long e = c->tls_active ? bufferevent_get_openssl_error(bev) : 0;
        fail(c, SMTP_CLIENT_ERR_CLOSED, false, "connection to %s port %d lost in %s: %s", c->host,
             c->port, state_names[c->state],
             e != 0 ? ERR_reason_error_string(e) : (err != 0 ? strerror(err) : "error"));
    }
    leave(c);
}

static void on_read(struct bufferevent *bev, void *arg)
{
    struct smtp_client *c = arg;

    enter(c);
    while (alive(c) && c->bev == bev) {
        struct evbuffer *in = bufferevent_get_input(bev);
        size_t eol_len = 0;
        struct evbuffer_ptr p = evbuffer_search_eol(in, NULL, &eol_len, EVBUFFER_EOL_LF);
        if (p.pos < 0) {
            if (evbuffer_get_length(in) > SMTP_REPLY_LINE_TOLERANCE)
                fail(c, SMTP_CLIENT_ERR_PROTOCOL, false, "reply line too long in %s",
                     state_names[c->state]);
            break;
        }
        size_t raw_len = (size_t)p.pos + eol_len;
        size_t len = (size_t)p.pos;
        if (len > SMTP_REPLY_LINE_TOLERANCE) {
            fail(c, SMTP_CLIENT_ERR_PROTOCOL, false, "reply line too long in %s",
                 state_names[c->state]);
            break;
        }
        const char *line = (const char *)evbuffer_pullup(in, (ev_ssize_t)raw_len);
        if (line == NULL) {
            fail(c, SMTP_CLIENT_ERR_PROTOCOL, false, "out of memory reading reply");
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
            fail(c, SMTP_CLIENT_ERR_PROTOCOL, false, "unparseable reply from %s in %s", c->host,
                 state_names[c->state]);
            break;
        }
        if (rc == 1) {
            handle_reply(c);
            smtp_reply_reset(&c->reply);
        }
    }
    leave(c);
}

/* ---- session setup -------------------------------------------------- */

static void become_ready(struct smtp_client *c)
{
    wipe_secret(c);
    disarm(c);
    client_enter_state(c, ST_READY);
    if (c->cb.on_ready != NULL)
        c->cb.on_ready(c, c->cb_arg);
}

static const char *mech_name(enum config_auth_mech m)
{
    switch (m) {
    case CONFIG_AUTH_PLAIN:
        return "PLAIN";
    case CONFIG_AUTH_LOGIN:
        return "LOGIN";
    case CONFIG_AUTH_XOAUTH2:
        return "XOAUTH2";
    case CONFIG_AUTH_NONE:
        break;
    }
    return "NONE";
}

static void start_auth(struct smtp_client *c)
{
    static const unsigned bits[] = {
        [CONFIG_AUTH_PLAIN] = SMTP_AUTH_BIT_PLAIN,
        [CONFIG_AUTH_LOGIN] = SMTP_AUTH_BIT_LOGIN,
        [CONFIG_AUTH_XOAUTH2] = SMTP_AUTH_BIT_XOAUTH2,
    };
    const char *user = c->username != NULL ? c->username : "";
    const char *secret = c->secret != NULL ? c->secret : "";
    size_t ulen = strlen(user), slen = strlen(secret);
    int rc = 0;

    if (!(c->ehlo.auth & bits[c->auth])) {
        fail(c, SMTP_CLIENT_ERR_AUTH, false, "%s port %d does not offer AUTH %s%s", c->host,
             c->port, mech_name(c->auth), c->ehlo.auth == 0 ? " (no AUTH at all)" : "");
        return;
    }
    if (c->auth == CONFIG_AUTH_PLAIN) {
        /* RFC 4616: [authzid] NUL authcid NUL passwd, as initial response. */
        size_t n = 1 + ulen + 1 + slen;
        char *raw = malloc(n);
        if (raw == NULL)
            goto nomem;
        raw[0] = '\0';
        memcpy(raw + 1, user, ulen);
        raw[1 + ulen] = '\0';
        memcpy(raw + 2 + ulen, secret, slen);
        rc = send_b64_secret(c, "AUTH PLAIN ", raw, n);
        OPENSSL_cleanse(raw, n);
        free(raw);
        client_enter_state(c, ST_AUTH);
    } else if (c->auth == CONFIG_AUTH_XOAUTH2) {
        /* "user=" user ^A "auth=Bearer " token ^A ^A */
        size_t n = 5 + ulen + 1 + 12 + slen + 2;
        char *raw = malloc(n + 1);
        if (raw == NULL)
            goto nomem;
        snprintf(raw, n + 1, "user=%s\001auth=Bearer %s\001\001", user, secret);
        rc = send_b64_secret(c, "AUTH XOAUTH2 ", raw, n);
        OPENSSL_cleanse(raw, n);
        free(raw);
        client_enter_state(c, ST_AUTH);
    } else {
        send_line(c, "AUTH LOGIN");
        client_enter_state(c, ST_AUTH_LOGIN);
    }
    if (rc < 0)
        goto nomem;
    arm(c, c->to.command_ms);
    return;
nomem:
    fail(c, SMTP_CLIENT_ERR_AUTH, false, "out of memory preparing AUTH");
}

/* After each EHLO: decide between STARTTLS, AUTH and ready. */
static void after_ehlo(struct smtp_client *c)
{
    if (c->tls == CONFIG_TLS_STARTTLS && !c->tls_active) {
        if (!c->ehlo.starttls) {
            /* Fail closed: nothing but EHLO went out in clear. */
            fail(c, SMTP_CLIENT_ERR_TLS, false, "%s port %d does not offer STARTTLS", c->host,
                 c->port);
            return;
        }
        send_line(c, "STARTTLS");
        client_enter_state(c, ST_STARTTLS);
        arm(c, c->to.command_ms);
        return;
    }
    if (c->auth != CONFIG_AUTH_NONE) {
        start_auth(c);
        return;
    }
    become_ready(c);
}

static void handle_setup_reply(struct smtp_client *c)
{
    struct smtp_reply *r = &c->reply;
    const char *secret = c->secret != NULL ? c->secret : "";

    switch (c->state) {
    case ST_GREETING:
        if (r->code != 220) {
            fail_reply(c, SMTP_CLIENT_ERR_PROTOCOL, "greeting");
            return;
        }
        send_ehlo(c, ST_EHLO);
        return;
    case ST_EHLO:
    case ST_EHLO_TLS:
        if (r->code == 250) {
            after_ehlo(c);
        } else if (c->state == ST_EHLO && r->code >= 500 && c->tls == CONFIG_TLS_NONE &&
                   c->auth == CONFIG_AUTH_NONE) {
            /* RFC 5321 3.2: an old server; no extensions then. */
            memset(&c->ehlo, 0, sizeof(c->ehlo));
            send_line(c, "HELO %s", c->helo_name);
            client_enter_state(c, ST_HELO);
            arm(c, c->to.command_ms);
        } else {
            fail_reply(c, SMTP_CLIENT_ERR_PROTOCOL, "EHLO rejected");
        }
        return;
    case ST_HELO:
        if (r->code != 250) {
            fail_reply(c, SMTP_CLIENT_ERR_PROTOCOL, "HELO rejected");
            return;
        }
        become_ready(c);
        return;
    case ST_STARTTLS:
        if (r->code != 220) {
            fail_reply(c, SMTP_CLIENT_ERR_TLS, "STARTTLS rejected");
            return;
        }
        /* RFC 3207 section 5 / CVE-2011-0411: bytes after the 220 would be
         * read as if they came through TLS. */
        if (evbuffer_get_length(bufferevent_get_input(c->bev)) > 0) {
            fail(c, SMTP_CLIENT_ERR_TLS, false, "data injected after STARTTLS reply");
            return;
        }
        start_tls(c, ST_TLS_STARTTLS);
        return;
    case ST_AUTH:
        if (r->code == 235) {
            become_ready(c);
        } else if (r->code == 334 && c->auth == CONFIG_AUTH_XOAUTH2) {
            /* The challenge carries a JSON error; an empty line ends the
             * exchange and brings the final (5xx) reply. */
            send_line(c, "%s", "");
            client_enter_state(c, ST_AUTH_XOAUTH2);
            arm(c, c->to.command_ms);
        } else {
            fail_reply(c, SMTP_CLIENT_ERR_AUTH, "AUTH failed");
        }
        return;
    case ST_AUTH_LOGIN:
        if (r->code != 334) {
            fail_reply(c, SMTP_CLIENT_ERR_AUTH, "AUTH LOGIN failed");
            return;
        }
        if (send_b64_secret(c, "", c->username != NULL ? c->username : "",
                            c->username != NULL ? strlen(c->username) : 0) < 0) {
            fail(c, SMTP_CLIENT_ERR_AUTH, false, "out of memory preparing AUTH");
            return;
        }
        client_enter_state(c, ST_AUTH_LOGIN_USER);
        arm(c, c->to.command_ms);
        return;
    case ST_AUTH_LOGIN_USER:
        if (r->code != 334) {
            fail_reply(c, SMTP_CLIENT_ERR_AUTH, "AUTH LOGIN failed");
            return;
        }
        if (send_b64_secret(c, "", secret, strlen(secret)) < 0) {
            fail(c, SMTP_CLIENT_ERR_AUTH, false, "out of memory preparing AUTH");
            return;
        }
        client_enter_state(c, ST_AUTH);
        arm(c, c->to.command_ms);
        return;
    case ST_AUTH_XOAUTH2:
        fail_reply(c, SMTP_CLIENT_ERR_AUTH, "AUTH failed");
        return;
    default:
        return;
    }
}

/* ---- transactions --------------------------------------------------- */

static void set_status(struct smtp_client_status *s, const struct smtp_reply *r)
{
    s->code = r->code;
    memcpy(s->enhanced, r->enhanced, sizeof(s->enhanced));
    memcpy(s->text, r->text, sizeof(s->text));
    s->from_server = true;
}

static void set_local_status(struct smtp_client_status *s, int code, const char *enhanced,
                             const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static void set_local_status(struct smtp_client_status *s, int code, const char *enhanced,
                             const char *fmt, ...)
{
    s->code = code;
    snprintf(s->enhanced, sizeof(s->enhanced), "%s", enhanced);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->text, sizeof(s->text), fmt, ap);
    va_end(ap);
    s->from_server = false;
}

/* Ends the transaction and reports it; the connection is idle again.
 * still_open: the server may still hold the transaction (MAIL accepted, no
 * final reply to "."), so the next one starts with RSET. */
static void finish_message(struct smtp_client *c, enum smtp_client_stage stage, bool still_open)
{
    struct smtp_client_result *res = &c->result;
    res->stage = stage;
    res->rcpts = c->rcpt_res;
    res->n_rcpts = c->msg.n_rcpts;
    for (size_t i = 0; i < c->msg.n_rcpts; i++) {
        struct smtp_client_rcpt_result *rr = &c->rcpt_res[i];
        if (stage == SMTP_CLIENT_STAGE_LOCAL || stage == SMTP_CLIENT_STAGE_MAIL) {
            rr->status = res->status;
            rr->rcpt_accepted = false;
        } else if (rr->rcpt_accepted) {
            rr->status = res->status;
        }
    }
    if (stage != SMTP_CLIENT_STAGE_LOCAL)
        c->needs_rset = still_open;
    if (stage == SMTP_CLIENT_STAGE_DOT && res->status.code >= 200 && res->status.code <= 299)
        c->sent++;
    disarm(c);
    client_enter_state(c, ST_READY);
    if (c->cb.on_sent != NULL)
        c->cb.on_sent(c, res, c->cb_arg);
}

static void add_body_piece(struct evbuffer *ob, const char *p, size_t n)
{
    if (n >= BODY_REFERENCE_MIN)
        evbuffer_add_reference(ob, p, n, NULL, NULL);
    else if (n > 0)
        evbuffer_add(ob, p, n);
}

/* Queues the message dot-stuffed (RFC 5321 4.5.2) followed by the final
 * ".": one write for the body tail and the terminator. Lines are stuffed
 * after any LF, so a bare LF cannot turn a "." line into an end of data. */
static void write_body(struct smtp_client *c)
{
    struct evbuffer *ob = out(c);
    const char *p = c->msg.data;
    size_t len = c->msg.len;
    const char *end = p + len;
    const char *seg = p;

    if (len > 0 && p[0] == '.')
        evbuffer_add(ob, ".", 1);
    while (seg < end) {
        const char *hit = memmem(seg, (size_t)(end - seg), "\n.", 2);
        if (hit == NULL)
            break;
        add_body_piece(ob, seg, (size_t)(hit + 1 - seg));
        evbuffer_add(ob, ".", 1);
        seg = hit + 1;
    }
    add_body_piece(ob, seg, (size_t)(end - seg));
    if (len == 0 || (len >= 2 && end[-2] == '\r' && end[-1] == '\n'))
        evbuffer_add(ob, ".\r\n", 3);
    else if (end[-1] == '\r')
        evbuffer_add(ob, "\n.\r\n", 4);
    else
        evbuffer_add(ob, "\r\n.\r\n", 5);
}

static void send_mail(struct smtp_client *c)
{
    size_t size = c->msg.size != 0 ? c->msg.size : c->msg.len;
    bool eight = (c->msg.flags & SMTP_CLIENT_MSG_8BIT) && c->ehlo.eightbitmime;
    char size_param[32] = "";
    if (c->ehlo.size)
        snprintf(size_param, sizeof(size_param), " SIZE=%zu", size);
    send_line(c, "MAIL FROM:<%s>%s%s%s", c->msg.sender, size_param, eight ? " BODY=8BITMIME" : "",
              c->smtputf8 ? " SMTPUTF8" : "");
}

static void send_rcpt(struct smtp_client *c, size_t i)
{
    send_line(c, "RCPT TO:<%s>", c->msg.rcpts[i]);
}

static void handle_transaction_reply(struct smtp_client *c)
{
    struct smtp_reply *r = &c->reply;
    bool ok = r->code >= 200 && r->code <= 299;

    /* RFC 5321 3.8: 421 means the server is closing the channel. */
    if (r->code == 421) {
        fail_reply(c, SMTP_CLIENT_ERR_PROTOCOL, "service not available");
        return;
    }
    switch (c->state) {
    case ST_RSET:
        if (!ok) {
            fail_reply(c, SMTP_CLIENT_ERR_PROTOCOL, "RSET rejected");
            return;
        }
        c->needs_rset = false;
        if (!c->pipelined)
            send_mail(c);
        client_enter_state(c, ST_MAIL);
        arm(c, c->to.mail_ms);
        return;
    case ST_MAIL:
        c->mail_ok = ok;
        if (!ok)
            set_status(&c->result.status, r);
        if (!c->pipelined) {
            if (!ok) {
                finish_message(c, SMTP_CLIENT_STAGE_MAIL, false);
                return;
            }
            send_rcpt(c, 0);
        }
        client_enter_state(c, ST_RCPT);
        arm(c, c->to.rcpt_ms);
        return;
    case ST_RCPT: {
        struct smtp_client_rcpt_result *rr = &c->rcpt_res[c->rcpt_replied++];
        set_status(&rr->status, r);
        rr->rcpt_accepted = ok && c->mail_ok;
        if (rr->rcpt_accepted)
            c->result.n_accepted++;
        if (c->rcpt_replied < c->msg.n_rcpts) {
            if (!c->pipelined)
                send_rcpt(c, c->rcpt_replied);
            arm(c, c->to.rcpt_ms);
            return;
        }
        if (c->mail_ok && c->result.n_accepted == 0) {
            /* The last rejection stands for the message. */
            set_local_status(&c->result.status, r->code, r->enhanced,
                             "all recipients were rejected (last: %s)", r->text);
            c->result.status.from_server = true;
        }
        if (!c->pipelined) {
            if (c->result.n_accepted == 0) {
                /* RSET goes out lazily with the next message, or never when
                 * QUIT comes first. */
                finish_message(c, SMTP_CLIENT_STAGE_RCPT, true);
                return;
            }
            send_line(c, "DATA");
        }
        client_enter_state(c, ST_DATA);
        arm(c, c->to.data_init_ms);
        return;
    }
    case ST_DATA:
        if (r->code == 354) {
            /* RFC 2920 3.1: a server may accept DATA although every RCPT
             * failed; an empty body then ends the transaction. */
            if (c->mail_ok && c->result.n_accepted > 0) {
                write_body(c);
                c->discard_dot = false;
            } else {
                evbuffer_add(out(c), ".\r\n", 3);
                c->discard_dot = true;
            }
            client_enter_state(c, ST_DOT);
            arm(c, c->to.data_final_ms);
            return;
        }
        if (!c->mail_ok) {
            finish_message(c, SMTP_CLIENT_STAGE_MAIL, false);
        } else if (c->result.n_accepted == 0) {
            finish_message(c, SMTP_CLIENT_STAGE_RCPT, true);
        } else {
            set_status(&c->result.status, r);
            finish_message(c, SMTP_CLIENT_STAGE_DATA, true);
        }
        return;
    case ST_DOT:
        if (c->discard_dot) {
            finish_message(c, c->mail_ok ? SMTP_CLIENT_STAGE_RCPT : SMTP_CLIENT_STAGE_MAIL, false);
            return;
        }
        set_status(&c->result.status, r);
        finish_message(c, SMTP_CLIENT_STAGE_DOT, false);
        return;
    default:
        return;
    }
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
        handle_setup_reply(c);
        return;
    case ST_RSET:
    case ST_MAIL:
    case ST_RCPT:
    case ST_DATA:
    case ST_DOT:
        handle_transaction_reply(c);
        return;
    case ST_QUIT:
        quit_done(c);
        return;
    case ST_READY:
    case ST_LOCAL_REJECT:
        /* Servers announce an idle timeout with 421 before closing. */
        if (c->reply.code == 421)
            fail(c, SMTP_CLIENT_ERR_CLOSED, true, "closed while idle: " REPLY_FMT,
                 REPLY_ARGS(&c->reply));
        else
            fail_reply(c, SMTP_CLIENT_ERR_PROTOCOL, "unexpected reply while idle");
        return;
    default:
        fail_reply(c, SMTP_CLIENT_ERR_PROTOCOL, "unexpected reply");
        return;
    }
}

static void on_deferred(evutil_socket_t fd, short what, void *arg)
{
    struct smtp_client *c = arg;
    enter(c);
    if (c->state == ST_START)
        start(c);
    else if (c->state == ST_LOCAL_REJECT)
        finish_message(c, SMTP_CLIENT_STAGE_LOCAL, false);
    leave(c);
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

/* An address goes between angle brackets on one command line. */
static int check_address(const char *a, bool *non_ascii)
{
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)a; *p != '\0'; p++, n++) {
        if (*p < 0x20 || *p == 0x7f || *p == '<' || *p == '>')
            return -1;
        if (*p >= 0x80)
            *non_ascii = true;
    }
    return n <= SMTP_PATH_MAX ? 0 : -1;
}

int smtp_client_send(struct smtp_client *c, const struct smtp_client_msg *msg)
{
    if (!alive(c) || c->quitting)
        return -ENOTCONN;
    if (c->state != ST_READY)
        return -EBUSY;
    if (msg == NULL || msg->n_rcpts == 0 || msg->rcpts == NULL ||
        (msg->data == NULL && msg->len > 0))
        return -EINVAL;
    bool non_ascii = false;
    if (check_address(msg->sender != NULL ? msg->sender : "", &non_ascii) < 0)
        return -EINVAL;
    for (size_t i = 0; i < msg->n_rcpts; i++)
        if (msg->rcpts[i] == NULL || msg->rcpts[i][0] == '\0' ||
            check_address(msg->rcpts[i], &non_ascii) < 0)
            return -EINVAL;
    if (msg->n_rcpts > c->rcpt_cap) {
        size_t cap = c->rcpt_cap ? c->rcpt_cap : 8;
        while (cap < msg->n_rcpts)
            cap *= 2;
        struct smtp_client_rcpt_result *v = realloc(c->rcpt_res, cap * sizeof(*v));
        if (v == NULL)
            return -ENOMEM;
        c->rcpt_res = v;
        c->rcpt_cap = cap;
    }
    memset(c->rcpt_res, 0, msg->n_rcpts * sizeof(*c->rcpt_res));
    memset(&c->result, 0, sizeof(c->result));
    c->msg = *msg;
    if (c->msg.sender == NULL)
        c->msg.sender = "";
    c->rcpt_replied = 0;
    c->mail_ok = false;
    c->discard_dot = false;
    c->smtputf8 = (msg->flags & SMTP_CLIENT_MSG_SMTPUTF8) || non_ascii;
    size_t size = msg->size != 0 ? msg->size : msg->len;

    /* Refusals decided here are permanent for this upstream: no silent
     * downgrade of addresses or 8-bit content (RFC 6531 3.4, RFC 6152). */
    struct smtp_client_status *st = &c->result.status;
    bool refused = true;
    if (c->smtputf8 && !c->ehlo.smtputf8)
        set_local_status(st, 553, "5.6.7",
                         "upstream %s lacks SMTPUTF8, required by internationalized addresses",
                         c->host);
    else if ((msg->flags & SMTP_CLIENT_MSG_8BIT) && !c->ehlo.eightbitmime)
        set_local_status(st, 554, "5.6.3", "upstream %s lacks 8BITMIME, message has 8-bit data",
                         c->host);
    else if (c->ehlo.size && c->ehlo.size_max > 0 && size > c->ehlo.size_max)
        set_local_status(st, 552, "5.3.4", "message size %zu exceeds upstream %s limit %llu", size,
                         c->host, c->ehlo.size_max);
    else
        refused = false;
    if (refused) {
        client_enter_state(c, ST_LOCAL_REJECT);
        event_active(c->deferred, EV_TIMEOUT, 1);
        return 0;
    }

    /* RFC 2920: RSET, MAIL, every RCPT and DATA in one write. */
    c->pipelined = c->ehlo.pipelining;
    if (c->needs_rset)
        send_line(c, "RSET");
    if (!c->needs_rset || c->pipelined)
        send_mail(c);
    if (c->pipelined) {
        for (size_t i = 0; i < msg->n_rcpts; i++)
            send_rcpt(c, i);
        send_line(c, "DATA");
    }
    client_enter_state(c, c->needs_rset ? ST_RSET : ST_MAIL);
    arm(c, c->needs_rset ? c->to.command_ms : c->to.mail_ms);
    return 0;
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
    send_line(c, "QUIT");
    client_enter_state(c, ST_QUIT);
    arm(c, c->to.quit_ms);
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
