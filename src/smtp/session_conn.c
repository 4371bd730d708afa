/* The life of an SMTP server connection: session_start() when the listener
 * hands one over, the bufferevent callbacks (read, write, events), STARTTLS's
 * switch to TLS, eviction and draining, and session_close(). What a command
 * does is in session.c. */
#include "smtp/session.h"

#include "smtp/session_int.h"

#include "core/config.h"
#include "core/log.h"
#include "core/relay.h"
#include "net/cidr.h"
#include "net/listener.h"
#include "net/tls.h"
#include "net/tls_offload.h"
#include "policy/users.h"
#include "mail/scram.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

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
    if (!s->bev) {
        session_close(s);
        return;
    }
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

/* A handshake failed (here or on a handshake thread): logged and reported
 * once. */
static void tls_failed(struct session *s, const char *why)
{
    log_event(LOG_WARN, "tls.failed", "client_ip", "%s", s->ip, "error", "%s", why, NULL);
    events_security(s->r, s->ip, "tls_failure", why);
}

/* The handshake finished, here or on a handshake thread. */
static void tls_established(struct session *s, SSL *ssl)
{
    if (ssl)
        tls_describe(ssl, s->tls_desc, sizeof s->tls_desc);
    s->tls = true;
    session_enter_state(s, ST_INIT);
    s->clock.line_ms = session_now_ms();
    const char *sni = ssl ? SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name) : NULL;
    log_event(LOG_INFO, "tls.established", "client_ip", "%s", s->ip, "tls", "%s", s->tls_desc,
              "sni", "%s", sni ? sni : "", NULL);
    tls_client_identity(s, ssl);
    if (s->greet_after_tls) {
        s->greet_after_tls = false;
        session_reply(s, "220 %s ESMTP Sluice ready", s->r->cfg->hostname);
    }
    session_process_input(s);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    struct session *s = arg;
    if (what & BEV_EVENT_CONNECTED) {
        tls_established(s, bufferevent_openssl_get_ssl(bev));
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
            if (!tls_err)
                tls_failed(s, buf);
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

/* A handshake thread is done with the connection (tls_offload.h). */
static void tls_offloaded(void *arg, SSL *ssl, int fd, const char *error)
{
    struct session *s = arg;
    s->busy--;
    s->offload_fd = -1;
    if (s->dead || error) {
        if (error && !s->dead)
            tls_failed(s, error);
        SSL_free(ssl);
        evutil_closesocket(fd);
        session_close(s);
        return;
    }
    struct bufferevent *bev = bufferevent_openssl_socket_new(
        s->r->base, fd, ssl, BUFFEREVENT_SSL_OPEN, BEV_OPT_CLOSE_ON_FREE);
    if (!bev) {
        SSL_free(ssl);
        evutil_closesocket(fd);
        session_close(s);
        return;
    }
    bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
    attach(s, bev);
    tls_established(s, ssl);
}

/* Hands the handshake of fd to a handshake thread; false when there are
 * none or the job cannot be queued (the caller does it on the loop). */
static bool offload_tls(struct session *s, evutil_socket_t fd)
{
    if (!s->r->tls_offload)
        return false;
    SSL *ssl = SSL_new(s->r->tls);
    if (!ssl)
        return false;
    if (tls_offload_accept(s->r->tls_offload, ssl, fd, s->r->cfg->command_timeout, tls_offloaded,
                           s) < 0) {
        SSL_free(ssl);
        return false;
    }
    s->busy++;
    s->offload_fd = fd;
    session_enter_state(s, ST_TLS);
    return true;
}

/* STARTTLS with handshake threads: the 220 must be on the wire and the
 * plain bufferevent gone (its socket kept) before a thread reads the
 * ClientHello. False when the reply cannot be written at once. */
static bool offload_starttls(struct session *s)
{
    if (!s->r->tls_offload)
        return false;
    struct evbuffer *out = bufferevent_get_output(s->bev);
    evutil_socket_t fd = bufferevent_getfd(s->bev);
    while (evbuffer_get_length(out) > 0)
        if (evbuffer_write(out, fd) <= 0)
            return false;
    bufferevent_setfd(s->bev, -1);
    bufferevent_free(s->bev);
    s->bev = NULL;
    s->helo[0] = 0;
    s->esmtp = false;
    session_logout(s);
    session_transaction_reset(s);
    if (!offload_tls(s, fd)) {
        evutil_closesocket(fd);
        session_close(s);
    }
    return true;
}

void session_start_tls(struct session *s)
{
    if (offload_starttls(s))
        return;
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
    session_transaction_reset(s);
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
        if (s->offload_fd >= 0)
            /* a handshake thread holds the socket: end the connection for the
             * peer now; the thread sees it fail and gives the socket back */
            shutdown(s->offload_fd, SHUT_RDWR);
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
    session_transaction_reset(s);
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
    /* zeroed up to the AUTH line buffer, which needs none: 12 KiB less to
     * clear per connection */
    struct session *s = malloc(sizeof *s);
    if (s) {
        memset(s, 0, offsetof(struct session, line));
        s->line[0] = '\0';
    }
    if (!s) {
        evutil_closesocket(fd);
        listeners_release(r->listeners, sa, unauth);
        return;
    }
    s->r = r;
    s->offload_fd = -1;
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
    if (implicit_tls && offload_tls(s, fd)) {
        /* the greeting goes out once the handshake thread is done */
        s->greet_after_tls = true;
        s->deadline = evtimer_new(r->base, session_on_deadline, s);
        s->clock.line_ms = session_now_ms();
        session_deadline_arm(s);
        log_event(LOG_DEBUG, "connection.open", "client_ip", "%s", s->ip, "implicit_tls", "#%d", 1,
                  NULL);
        return;
    }
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
    s->deadline = evtimer_new(r->base, session_on_deadline, s);
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
