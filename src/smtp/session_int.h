/* Inside the SMTP server session: the state, the per-connection struct and
 * the verbs its parts share. session.c owns the state machine and the input
 * loop; session_conn.c the connection's life and I/O; session_auth.c the SASL exchanges;
 * session_content.c DATA/BDAT content up to the spool. Nothing outside
 * src/smtp/session*.c includes this. */
#ifndef SLUICE_SMTP_SESSION_INT_H
#define SLUICE_SMTP_SESSION_INT_H

#include "core/events.h"
#include "policy/accounting.h"
#include "policy/authz.h"
#include "policy/policy.h"
#include "mail/address.h"
#include "smtp/command.h"
#include "smtp/data.h"
#include "smtp/deadline.h"
#include "mail/intake.h"
#include "intake/msgbuf.h"
#include "smtp/sasl.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include <event2/util.h>

struct relay;
struct bufferevent;
struct event;
struct evbuffer;
struct cred;
struct users;
struct submit_tx;
struct scram_server;

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

struct session {
    struct relay *r;
    struct bufferevent *bev;
    enum session_state st;
    struct session *prev, *next;
    struct sockaddr_storage peer;
    char ip[INET6_ADDRSTRLEN];
    bool loopback, relay_net, tls, esmtp, authed;
    bool greet_after_tls; /* implicit TLS on a handshake thread: 220 once it is done */
    int offload_fd;       /* the socket while a handshake thread has it, else -1 */
    char tls_desc[128];
    char helo[256];
    char auth_user[SASL_FIELD_MAX + 1]; /* the credential name once authed */
    struct cred *cred;                  /* who logged in; NULL before AUTH and for relay clients */
    uint64_t cred_gen;                  /* credential store generation cred was read at */
    const char *auth_method; /* "PLAIN", "LOGIN", "SCRAM-SHA-256", "api-key", "client-cert" */
    int bad_commands;
    int busy;               /* callbacks outstanding (worker job, spool commit) */
    bool dead;              /* connection gone; free when busy drops to 0 */
    bool discarding;        /* dropping an over-long line up to its end */
    bool unauth_slot;       /* holds a not-yet-authenticated connection slot */
    struct event *deadline; /* the next of the deadlines in `clock` */
    struct deadline_clock clock;
    struct users *auth_users;

    /* transaction: the envelope and content live in the intake transaction */
    struct submit_tx *tx;         /* from an accepted MAIL to the end of the transaction */
    struct smtp_mail_params mp;   /* MAIL parameters (SMTPUTF8 governs RCPT parsing) */
    struct smtp_data_decoder dec; /* DATA dot-stuffing and framing facts */
    size_t data_total;            /* content octets of this transaction, kept or not */
    bool bdat_used, bdat_last, bdat_failed;
    const char *bdat_error; /* reply for a BDAT chunk that is read but refused */
    uint64_t bdat_left;

    /* AUTH exchange */
    char login_user[SASL_FIELD_MAX + 1];
    char check_pass[SASL_FIELD_MAX + 1];
    const char *check_mech;    /* worker input: "PLAIN" or "LOGIN" */
    struct policy_login check; /* worker result; check.cred NULL on failure */
    struct scram_server *scram;
    char line[AUTH_LINE_MAX + 2];
};

/* ---- session.c ---- */

/* Every change of s->st goes through here (logged as smtp.state at debug). */
void session_enter_state(struct session *s, enum session_state st);
const char *session_state_name(enum session_state st);

/* Queues one reply line (CRLF added); the next command line is due from now. */
__attribute__((format(printf, 2, 3))) void session_reply(struct session *s, const char *fmt, ...);
__attribute__((format(printf, 2, 0))) void session_vreply(struct session *s, const char *fmt,
                                                          va_list ap);
/* A rejected command: its reply, or the 421 alone once there were
 * max_bad_commands; true when the session is closing. */
__attribute__((format(printf, 2, 3))) bool session_command_error(struct session *s, const char *fmt,
                                                                 ...);
/* Counts a rejected command; at the cap sends 421, closes, returns true. */
bool session_too_many_errors(struct session *s);
/* A refusal reported once: reply, event, counter, accounting row. */
void session_refused(struct session *s, enum reject_reason why, const char *line);
void session_policy_refused(struct session *s, const struct authz_refusal *ref);
void session_account(struct session *s, enum acct_event ev, const char *reason, long long bytes);
void session_close_when_flushed(struct session *s);
void session_close(struct session *s);
/* Reads what is buffered, as far as the state allows. */
void session_process_input(struct session *s);
void session_logout(struct session *s);
void session_after_transaction(struct session *s);
void session_set_timeout(struct session *s, int seconds);
void session_deadline_arm(struct session *s);
int64_t session_now_ms(void);
bool session_auth_offered(const struct session *s);
/* The credential a policy check applies to: NULL for a relay client. */
const struct cred *session_sender_cred(const struct session *s);

/* ---- session_auth.c ---- */

void session_cmd_auth(struct session *s, const struct smtp_command *c);
/* One line of a SASL exchange (states ST_AUTH_PLAIN .. ST_AUTH_SCRAM). */
void session_auth_continuation(struct session *s, const char *line, size_t len);
/* The client is known from here on; the credential is owned by s. */
void session_set_identity(struct session *s, const char *method, struct cred *c, uint64_t gen);
void session_scram_end(struct session *s);

/* ---- session_content.c ---- */

void session_cmd_data(struct session *s, const struct smtp_command *c);
void session_cmd_bdat(struct session *s, const struct smtp_command *c);
/* Consumes DATA or BDAT content; true when the content ended and was
 * handled, false when more input is needed. */
bool session_consume_content(struct session *s, struct evbuffer *in);

/* Ends the current transaction (MAIL..DATA) and frees its state. */
void session_transaction_reset(struct session *s);
/* The deadline timer's callback (struct session *s as arg). */
void session_on_deadline(evutil_socket_t fd, short what, void *arg);
/* Switches the connection to TLS after the 220 to STARTTLS. */
void session_start_tls(struct session *s);

#endif
