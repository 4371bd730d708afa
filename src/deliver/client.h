/* SMTP client of the delivery engine: one connection to one upstream
 * (smarthost), driven as an explicit state machine on libevent
 * bufferevents. Connects, verifies TLS, authenticates, then carries any
 * number of messages (RFC 5321, 2920 PIPELINING, 1870 SIZE, 6152 8BITMIME,
 * 6531 SMTPUTF8, 3207 STARTTLS, 4954 AUTH). */
#ifndef SLUICE_DELIVER_CLIENT_H
#define SLUICE_DELIVER_CLIENT_H

#include <stdbool.h>
#include <stddef.h>

#include "core/config.h"
#include "deliver/client_reply.h"

struct event_base;
struct evdns_base;
struct tls_client_ctx;
struct smtp_client;

/* Per-state time limits in milliseconds; 0 selects the default. */
struct smtp_client_timeouts {
    unsigned connect_ms;    /* DNS + TCP + TLS handshakes; default 30 s */
    unsigned initial_ms;    /* 220 greeting, RFC 5321 4.5.3.2.1: 5 min */
    unsigned command_ms;    /* EHLO, STARTTLS, AUTH, RSET: 5 min */
    unsigned mail_ms;       /* 4.5.3.2.2: 5 min */
    unsigned rcpt_ms;       /* 4.5.3.2.3: 5 min */
    unsigned data_init_ms;  /* 4.5.3.2.4: 2 min */
    unsigned data_block_ms; /* 4.5.3.2.5: 3 min without write progress */
    unsigned data_final_ms; /* 4.5.3.2.6: 10 min for the reply to "." */
    unsigned quit_ms;       /* 221 to QUIT; default 10 s */
};

struct smtp_client_opts {
    const char *host; /* name or IP literal */
    int port;
    enum config_tls_mode tls;
    enum config_tls_verify verify; /* none: no chain or name check (pins still apply) */
    const char *pin_sha256;        /* optional hex SPKI SHA-256 list, comma-separated */
    const char *ca_file;           /* optional; system store otherwise */
    const char *server_name;       /* SNI and verification name; default host */
    /* Optional context shared by the connections of one upstream (sessions
     * resume, CA store loaded once); the client takes a reference. Without
     * it the client makes its own from ca_file. */
    struct tls_client_ctx *tls_ctx;
    enum config_auth_mech auth;
    const char *username;
    const char *secret; /* password or bearer token; copied, wiped after AUTH */
    const char *helo_name;
    struct smtp_client_timeouts timeouts;
};

/* Why a connection failed. All of these are the upstream's (or the path's)
 * fault: the delivery engine defers and fails over, it never bounces. */
enum smtp_client_errcat {
    SMTP_CLIENT_ERR_CONNECT = 1, /* DNS failure, refused, unreachable */
    SMTP_CLIENT_ERR_TLS,         /* handshake, verification, pin, STARTTLS missing */
    SMTP_CLIENT_ERR_AUTH,        /* AUTH rejected or mechanism not offered */
    SMTP_CLIENT_ERR_PROTOCOL,    /* bad greeting, 421, unparseable reply */
    SMTP_CLIENT_ERR_TIMEOUT,
    SMTP_CLIENT_ERR_CLOSED, /* peer closed the connection */
};

struct smtp_client_error {
    enum smtp_client_errcat category;
    int code; /* last reply code, 0 when none applies */
    char enhanced[SMTP_ENHANCED_MAX];
    char text[SMTP_REPLY_TEXT_MAX];
    char reason[320]; /* "certificate verify failed: hostname mismatch" */
    /* A message was in flight: it was not delivered, unless outcome_unknown
     * says the final "." went out and its reply never came (the upstream
     * may have accepted it; a retry may duplicate it). */
    bool in_transaction;
    bool outcome_unknown;
};

/* One reply, or a decision made locally (code set, from_server false). */
struct smtp_client_status {
    int code;
    char enhanced[SMTP_ENHANCED_MAX];
    char text[SMTP_REPLY_TEXT_MAX];
    bool from_server;
};

/* Which reply decided the message-level status. */
enum smtp_client_stage {
    SMTP_CLIENT_STAGE_LOCAL = 0, /* refused before sending (size, SMTPUTF8, 8BITMIME) */
    SMTP_CLIENT_STAGE_MAIL,
    SMTP_CLIENT_STAGE_RCPT, /* every recipient was rejected */
    SMTP_CLIENT_STAGE_DATA,
    SMTP_CLIENT_STAGE_DOT, /* reply to the final "." */
};

struct smtp_client_rcpt_result {
    /* The recipient's outcome: its RCPT rejection, or else the reply that
     * ended the transaction (MAIL failure, DATA or final "."). Delivered
     * exactly when status.code is 2xx. */
    struct smtp_client_status status;
    bool rcpt_accepted; /* RCPT got 2xx */
};

struct smtp_client_result {
    struct smtp_client_status status; /* message level */
    enum smtp_client_stage stage;
    const struct smtp_client_rcpt_result *rcpts; /* n_rcpts, in message order */
    size_t n_rcpts;
    size_t n_accepted; /* recipients whose RCPT got 2xx */
};

enum smtp_client_msg_flag {
    SMTP_CLIENT_MSG_SMTPUTF8 = 1u << 0, /* non-ASCII addresses or headers */
    SMTP_CLIENT_MSG_8BIT = 1u << 1,     /* body has octets over 127 */
};

struct smtp_client_msg {
    const char *sender; /* reverse-path without brackets; "" for <> */
    const char *const *rcpts;
    size_t n_rcpts;
    /* CRLF lines, not dot-stuffed. Referenced, not copied: must stay
     * unchanged until on_sent or on_error. */
    const char *data;
    size_t len;
    unsigned flags; /* enum smtp_client_msg_flag */
    size_t size;    /* announced with SIZE=; 0: len */
};

struct smtp_client_cb {
    /* Once, when the session is ready for its first message. */
    void (*on_ready)(struct smtp_client *c, void *arg);
    /* After each smtp_client_send; the connection is ready again. res and
     * its arrays live until the callback returns. */
    void (*on_sent)(struct smtp_client *c, const struct smtp_client_result *res, void *arg);
    /* The connection is gone; only smtp_client_free remains to be called. */
    void (*on_error)(struct smtp_client *c, const struct smtp_client_error *err, void *arg);
};

/* Allocates a client and starts connecting once the loop runs (no callback
 * runs before this returns). dns may be NULL (blocking resolver). Option
 * strings are copied. Returns NULL when out of memory or opts are invalid
 * (no host, port out of range). */
struct smtp_client *smtp_client_new(struct event_base *base, struct evdns_base *dns,
                                    const struct smtp_client_opts *opts,
                                    const struct smtp_client_cb *cb, void *cb_arg);

/* Starts one transaction (RSET first only after a failed one). Exactly one
 * on_sent or on_error follows. Returns 0, -EBUSY when not ready (connecting
 * or a transaction in progress), -ENOTCONN after an error, -EINVAL for a
 * message without recipients or with a line break in an address, -ENOMEM. */
int smtp_client_send(struct smtp_client *c, const struct smtp_client_msg *msg);

/* Sends QUIT and closes when the reply (or EOF, or quit timeout) comes; the
 * client then frees itself and calls nothing more. When not idle it closes
 * at once. c must not be used afterwards. */
void smtp_client_quit(struct smtp_client *c);

/* Closes at once and frees; safe inside callbacks. NULL is accepted. */
void smtp_client_free(struct smtp_client *c);

/* True between on_ready (or on_sent) and the next smtp_client_send. */
bool smtp_client_is_idle(const struct smtp_client *c);

/* Extensions of the last EHLO (after STARTTLS when used). */
const struct smtp_ehlo *smtp_client_extensions(const struct smtp_client *c);

/* "TLSv1.3 TLS_AES_256_GCM_SHA384", or "" without TLS. */
const char *smtp_client_tls_info(const struct smtp_client *c);

/* Number of messages handed to the upstream on this connection so far. */
unsigned long smtp_client_messages_sent(const struct smtp_client *c);

const char *smtp_client_errcat_name(enum smtp_client_errcat cat);

#endif
