/* Setting up a delivery connection: resolving the upstream, connecting to
 * each address in turn, STARTTLS with verification, EHLO and AUTH, up to the
 * state where the client is ready for a transaction. A failure here carries
 * a category (connect, TLS, auth) so the engine fails over rather than
 * bouncing. */
#include "deliver/client.h"
#include "deliver/client_int.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
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

#include "core/base64.h"
#include "net/tls_client.h"

static void cleanse_and_free(const void *data, size_t len, void *arg)
{
    OPENSSL_cleanse((void *)data, len);
    free((void *)data);
}

/* Queues a line holding credentials; the copy in the buffer is wiped once
 * written. Takes ownership of line (allocated, len bytes incl. CRLF). */
static int send_secret_line(struct smtp_client *c, char *line, size_t len)
{
    if (evbuffer_add_reference(client_out(c), line, len, cleanse_and_free, NULL) < 0) {
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
    client_enter(c);
    if (result != 0 || res == NULL) {
        if (res != NULL)
            evutil_freeaddrinfo(res);
        client_fail(c, SMTP_CLIENT_ERR_CONNECT, false, "cannot resolve %s: %s", c->host,
                    evutil_gai_strerror(result));
    } else {
        c->addrs = res;
        c->addr_next = res;
        snprintf(c->connect_err, sizeof(c->connect_err), "no usable address");
        client_connect_next(c);
    }
    client_leave(c);
}

void client_start(struct smtp_client *c)
{
    struct evutil_addrinfo hints;
    char port[8];

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_protocol = IPPROTO_TCP;
    snprintf(port, sizeof(port), "%d", c->port);
    client_enter_state(c, ST_RESOLVING);
    client_arm(c, c->to.connect_ms);
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

void client_free_connection(struct smtp_client *c)
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

void client_set_write_timeout(struct smtp_client *c)
{
    /* RFC 5321 4.5.3.2.5: the data block timeout, applied to every write. */
    unsigned ms = c->to.data_block_ms;
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    bufferevent_set_timeouts(c->bev, NULL, &tv);
}

void client_connect_next(struct smtp_client *c)
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
            client_free_connection(c);
            continue;
        }
        bufferevent_setcb(c->bev, client_on_read, NULL, client_on_event, c);
        if (bufferevent_socket_connect(c->bev, ai->ai_addr, (int)ai->ai_addrlen) < 0) {
            snprintf(c->connect_err, sizeof(c->connect_err), "%s: %s", ip, strerror(errno));
            client_free_connection(c);
            continue;
        }
        client_enter_state(c, ST_CONNECTING);
        return;
    }
    client_fail(c, SMTP_CLIENT_ERR_CONNECT, false, "cannot connect to %s port %d: %s", c->host,
                c->port, c->connect_err);
}

void client_start_tls(struct smtp_client *c, enum client_state next)
{
    char err[256];

    if (c->tls_ctx == NULL) {
        c->tls_ctx = tls_client_ctx_new(c->ca_file, err, sizeof(err));
        if (c->tls_ctx == NULL) {
            client_fail(c, SMTP_CLIENT_ERR_TLS, false, "%s", err);
            return;
        }
    }
    if (c->pin_text != NULL && tls_client_pins_parse(c->pin_text, &c->pins) < 0) {
        client_fail(c, SMTP_CLIENT_ERR_TLS, false, "malformed certificate pin (want hex SHA-256)");
        return;
    }
    SSL *ssl = tls_client_ssl_new(c->tls_ctx, c->server_name, c->verify == CONFIG_VERIFY_PEER, err,
                                  sizeof(err));
    if (ssl == NULL) {
        client_fail(c, SMTP_CLIENT_ERR_TLS, false, "%s", err);
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
        client_fail(c, SMTP_CLIENT_ERR_TLS, false, "cannot start TLS: out of memory");
        return;
    }
    c->fd = -1; /* the TLS bufferevent closes it */
    /* Servers often close after QUIT without close_notify. */
    bufferevent_openssl_set_allow_dirty_shutdown(c->bev, 1);
    bufferevent_setcb(c->bev, client_on_read, NULL, client_on_event, c);
    client_set_write_timeout(c);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    client_enter_state(c, next);
    client_arm(c, c->to.connect_ms);
}

static void send_ehlo(struct smtp_client *c, enum client_state next)
{
    memset(&c->ehlo, 0, sizeof(c->ehlo));
    client_send_line(c, "EHLO %s", c->helo_name);
    client_enter_state(c, next);
    client_arm(c, c->to.command_ms);
}

void client_tls_established(struct smtp_client *c)
{
    SSL *ssl = bufferevent_openssl_get_ssl(c->bev);
    char reason[256];
    bool verify = c->verify == CONFIG_VERIFY_PEER;

    if (verify && SSL_get_verify_result(ssl) != X509_V_OK) {
        tls_client_describe_failure(ssl, 0, reason, sizeof(reason));
        client_fail(c, SMTP_CLIENT_ERR_TLS, false, "%s", reason);
        return;
    }
    if (c->pins.n > 0 && tls_client_check_pins(ssl, verify, &c->pins, reason, sizeof(reason)) < 0) {
        client_fail(c, SMTP_CLIENT_ERR_TLS, false, "%s", reason);
        return;
    }
    c->tls_active = true;
    tls_client_describe(ssl, c->tls_info, sizeof(c->tls_info));
    if (c->state == ST_TLS_IMPLICIT) {
        client_enter_state(c, ST_GREETING);
        client_arm(c, c->to.initial_ms);
    } else {
        send_ehlo(c, ST_EHLO_TLS);
    }
}

void client_tls_failed(struct smtp_client *c)
{
    unsigned long e, first = 0;
    char reason[256];
    while ((e = bufferevent_get_openssl_error(c->bev)) != 0)
        if (first == 0)
            first = e;
    tls_client_describe_failure(bufferevent_openssl_get_ssl(c->bev), first, reason, sizeof(reason));
    client_fail(c, SMTP_CLIENT_ERR_TLS, false, "%s (%s port %d)", reason, c->host, c->port);
}

/* ---- session setup -------------------------------------------------- */

static void become_ready(struct smtp_client *c)
{
    client_wipe_secret(c);
    client_disarm(c);
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
        client_fail(c, SMTP_CLIENT_ERR_AUTH, false, "%s port %d does not offer AUTH %s%s", c->host,
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
        client_send_line(c, "AUTH LOGIN");
        client_enter_state(c, ST_AUTH_LOGIN);
    }
    if (rc < 0)
        goto nomem;
    client_arm(c, c->to.command_ms);
    return;
nomem:
    client_fail(c, SMTP_CLIENT_ERR_AUTH, false, "out of memory preparing AUTH");
}

/* After each EHLO: decide between STARTTLS, AUTH and ready. */
static void after_ehlo(struct smtp_client *c)
{
    if (c->tls == CONFIG_TLS_STARTTLS && !c->tls_active) {
        if (!c->ehlo.starttls) {
            /* Fail closed: nothing but EHLO went out in clear. */
            client_fail(c, SMTP_CLIENT_ERR_TLS, false, "%s port %d does not offer STARTTLS",
                        c->host, c->port);
            return;
        }
        client_send_line(c, "STARTTLS");
        client_enter_state(c, ST_STARTTLS);
        client_arm(c, c->to.command_ms);
        return;
    }
    if (c->auth != CONFIG_AUTH_NONE) {
        start_auth(c);
        return;
    }
    become_ready(c);
}

void client_setup_reply(struct smtp_client *c)
{
    struct smtp_reply *r = &c->reply;
    const char *secret = c->secret != NULL ? c->secret : "";

    switch (c->state) {
    case ST_GREETING:
        if (r->code != 220) {
            client_fail_reply(c, SMTP_CLIENT_ERR_PROTOCOL, "greeting");
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
            client_send_line(c, "HELO %s", c->helo_name);
            client_enter_state(c, ST_HELO);
            client_arm(c, c->to.command_ms);
        } else {
            client_fail_reply(c, SMTP_CLIENT_ERR_PROTOCOL, "EHLO rejected");
        }
        return;
    case ST_HELO:
        if (r->code != 250) {
            client_fail_reply(c, SMTP_CLIENT_ERR_PROTOCOL, "HELO rejected");
            return;
        }
        become_ready(c);
        return;
    case ST_STARTTLS:
        if (r->code != 220) {
            client_fail_reply(c, SMTP_CLIENT_ERR_TLS, "STARTTLS rejected");
            return;
        }
        /* RFC 3207 section 5 / CVE-2011-0411: bytes after the 220 would be
         * read as if they came through TLS. */
        if (evbuffer_get_length(bufferevent_get_input(c->bev)) > 0) {
            client_fail(c, SMTP_CLIENT_ERR_TLS, false, "data injected after STARTTLS reply");
            return;
        }
        client_start_tls(c, ST_TLS_STARTTLS);
        return;
    case ST_AUTH:
        if (r->code == 235) {
            become_ready(c);
        } else if (r->code == 334 && c->auth == CONFIG_AUTH_XOAUTH2) {
            /* The challenge carries a JSON error; an empty line ends the
             * exchange and brings the final (5xx) reply. */
            client_send_line(c, "%s", "");
            client_enter_state(c, ST_AUTH_XOAUTH2);
            client_arm(c, c->to.command_ms);
        } else {
            client_fail_reply(c, SMTP_CLIENT_ERR_AUTH, "AUTH failed");
        }
        return;
    case ST_AUTH_LOGIN:
        if (r->code != 334) {
            client_fail_reply(c, SMTP_CLIENT_ERR_AUTH, "AUTH LOGIN failed");
            return;
        }
        if (send_b64_secret(c, "", c->username != NULL ? c->username : "",
                            c->username != NULL ? strlen(c->username) : 0) < 0) {
            client_fail(c, SMTP_CLIENT_ERR_AUTH, false, "out of memory preparing AUTH");
            return;
        }
        client_enter_state(c, ST_AUTH_LOGIN_USER);
        client_arm(c, c->to.command_ms);
        return;
    case ST_AUTH_LOGIN_USER:
        if (r->code != 334) {
            client_fail_reply(c, SMTP_CLIENT_ERR_AUTH, "AUTH LOGIN failed");
            return;
        }
        if (send_b64_secret(c, "", secret, strlen(secret)) < 0) {
            client_fail(c, SMTP_CLIENT_ERR_AUTH, false, "out of memory preparing AUTH");
            return;
        }
        client_enter_state(c, ST_AUTH);
        client_arm(c, c->to.command_ms);
        return;
    case ST_AUTH_XOAUTH2:
        client_fail_reply(c, SMTP_CLIENT_ERR_AUTH, "AUTH failed");
        return;
    default:
        return;
    }
}
