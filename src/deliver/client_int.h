/* The delivery client's state, its connection struct and the steps its
 * files call in each other. Included only by src/deliver/client*.c. */
#ifndef SLUICE_DELIVER_CLIENT_INT_H
#define SLUICE_DELIVER_CLIENT_INT_H

#include <stdbool.h>
#include <stddef.h>

#include <event2/bufferevent.h>
#include <event2/event.h>

#include "deliver/client.h"
#include "net/tls_client.h"

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

/* The send side of a transaction: the last command written. */
enum client_send {
    SEND_NOTHING, /* nothing of this transaction yet */
    SEND_RSET,    /* RSET (the previous transaction left the session dirty) */
    SEND_MAIL,
    SEND_RCPTS, /* some RCPT commands; all once rcpt_sent == n_rcpts */
    SEND_DATA,  /* DATA: the body waits for the 354 */
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

    /* Transaction. Two machines: `state` is the reply awaited (the receive
     * side), `out` is how far the commands have gone (the send side, moved
     * only by client_send_ahead). With PIPELINING the send side runs ahead
     * to DATA at once; without it, one command per reply. */
    struct smtp_client_msg msg;
    enum client_send out;
    size_t rcpt_sent;
    unsigned replies_due; /* commands sent whose replies have not come */
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

void client_enter_state(struct smtp_client *c, enum client_state st);
void client_enter(struct smtp_client *c);
bool client_leave(struct smtp_client *c);
void client_arm(struct smtp_client *c, unsigned ms);
void client_disarm(struct smtp_client *c);
void client_wipe_secret(struct smtp_client *c);
void client_fail(struct smtp_client *c, enum smtp_client_errcat cat, bool with_reply,
                 const char *fmt, ...) __attribute__((format(printf, 4, 5)));
void client_fail_reply(struct smtp_client *c, enum smtp_client_errcat cat, const char *what);
struct evbuffer *client_out(struct smtp_client *c);
void client_send_line(struct smtp_client *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void client_on_event(struct bufferevent *bev, short what, void *arg);
void client_on_read(struct bufferevent *bev, void *arg);
void client_start(struct smtp_client *c);
void client_free_connection(struct smtp_client *c);
void client_set_write_timeout(struct smtp_client *c);
void client_connect_next(struct smtp_client *c);
void client_start_tls(struct smtp_client *c, enum client_state next);
void client_tls_established(struct smtp_client *c);
void client_tls_failed(struct smtp_client *c);
void client_setup_reply(struct smtp_client *c);

bool client_alive(const struct smtp_client *c);
void client_finish_message(struct smtp_client *c, enum smtp_client_stage stage, bool still_open);
void client_transaction_reply(struct smtp_client *c);

#endif
