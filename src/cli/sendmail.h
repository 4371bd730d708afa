/* The sendmail(1) entry and `sluice send` share these parts: the one-shot
 * submission client (sendmail_submit.c) and the per-user outbox that keeps
 * a message while the relay cannot take it (sendmail_outbox.c). The command
 * lines live in sendmail_cmd.c, sendmail_bs.c and send_cmd.c.
 * docs/SENDMAIL.md describes the behaviour and its guarantees. */
#ifndef SLUICE_CLI_SENDMAIL_H
#define SLUICE_CLI_SENDMAIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

struct config;

/* sysexits.h values, spelled here so the meaning stays next to the use. */
#define SM_EX_OK 0
#define SM_EX_USAGE 64     /* command line */
#define SM_EX_DATAERR 65   /* the message or the sender was refused (5xx) */
#define SM_EX_NOUSER 67    /* every recipient (or some, see SENDMAIL.md) was refused */
#define SM_EX_SOFTWARE 70  /* internal error */
#define SM_EX_OSERR 71     /* a system call failed */
#define SM_EX_CANTCREAT 73 /* the outbox cannot be written */
#define SM_EX_IOERR 74     /* reading the message failed */
#define SM_EX_TEMPFAIL 75  /* not sent and not kept */
#define SM_EX_NOPERM 77    /* the credential file is open to others */
#define SM_EX_CONFIG 78    /* the configuration does not load */

/* The configuration the sendmail entry reads when no -C, -c or
 * SLUICE_CONFIG names one and this file exists. */
#define SM_SYSTEM_CONFIG "/etc/sluice/sluice.conf"

/* One message with its envelope. */
struct sm_message {
    char *from;   /* MAIL FROM address, "" for the null sender */
    char **rcpts; /* RCPT TO addresses */
    size_t nrcpts;
    char *data; /* CRLF lines, not dot-stuffed */
    size_t len;
};

void sm_message_free(struct sm_message *m);

/* How and where to submit: from [sendmail] and [server]. */
struct sm_submit_conf {
    char host[256];
    char port[16];
    const char *trust_cert; /* the daemon's own certificate ([tls] cert), pinned */
    const char *helo;       /* EHLO name */
    char user[256];         /* "" = no AUTH */
    char password[512];
    int timeout; /* seconds */
};

/* Fills c from cfg: the address, the pinned certificate, the credential
 * (file checked for owner and mode, or SLUICE_SENDMAIL_* variables).
 * Returns SM_EX_OK or an exit status with err set. */
int sm_submit_conf_load(struct sm_submit_conf *c, const struct config *cfg, char *err,
                        size_t errlen);
void sm_submit_conf_wipe(struct sm_submit_conf *c);

enum sm_result {
    SM_SENT,      /* every recipient accepted and the message taken (250 after DATA) */
    SM_TEMPORARY, /* unreachable, TLS failure, 4xx: try again later */
    SM_REFUSED,   /* 5xx for the sender or the message (reply says which) */
    SM_NO_RCPT,   /* 5xx for every recipient */
    SM_AUTH,      /* the relay refused the credential (5xx to AUTH) */
};

/* Submits m in one SMTP transaction. Recipients refused with 5xx while
 * others are accepted are listed in *rejected (count *nrejected; the reply
 * text after each address); those answered 4xx go into *deferred (a subset
 * of m->rcpts, pointers into it) and the result is SM_SENT for the rest.
 * reply holds the last relevant reply or the local reason. */
enum sm_result sm_submit(const struct sm_submit_conf *c, const struct sm_message *m,
                         char reply[512], char ***deferred, size_t *ndeferred, char ***rejected,
                         size_t *nrejected);

/* The outbox folder (created 0700 when missing). Returns 0 or -1 with err. */
int sm_outbox_path(const struct config *cfg, char *out, size_t cap, char *err, size_t errlen);

/* The outbox file of m (malloc'd, *len octets): the format in
 * sendmail_outbox.c. NULL when an address holds a CR or LF (or no memory). */
char *sm_outbox_format(const struct sm_message *m, size_t *len);

/* Reads an outbox file's bytes into m (allocates; sm_message_free it).
 * Returns 0, or -1 when buf is not an outbox file. Pure. */
int sm_outbox_parse(const char *buf, size_t len, struct sm_message *m);

/* Stores m durably (tmp file, fsync, rename, fsync of the folder). Returns
 * 0, or -1 with err set. */
int sm_outbox_put(const char *dir, const struct sm_message *m, char *err, size_t errlen);

/* Forwards every waiting message, oldest first. A message goes out, then
 * its file is removed; a 5xx removes it too and is reported on stderr (it
 * can never go). Stops at the first temporary failure. Counts go to *sent,
 * *refused and *left (any may be NULL). Returns 0, or -1 when the folder
 * cannot be read or locked (another flush holds it: not an error, *left
 * says what waits). */
int sm_outbox_flush(const char *dir, const struct sm_submit_conf *c, int *sent, int *refused,
                    int *left, bool quiet);

/* Prints one line per waiting message (file, sender, recipients, size).
 * Returns how many, or -1. */
int sm_outbox_list(const char *dir, FILE *out);

/* Submits m; on a temporary failure keeps it (or its deferred recipients)
 * in the outbox. Prints what went wrong on stderr, prefixed with who.
 * Returns the sysexits status the caller should exit with. */
int sm_deliver_or_keep(const struct config *cfg, const struct sm_submit_conf *c,
                       const struct sm_message *m, const char *who);

/* Reads a message from in into m->data as CRLF lines. dot_ends: a line
 * holding only "." ends the message (sendmail without -i). Returns 0 or -1
 * (errno). */
int sm_read_message(FILE *in, bool dot_ends, struct sm_message *m);

/* The header work before submission: with extract, To/Cc/Bcc recipients
 * are added to m; Bcc fields are cut out; a From field is added from
 * m->from (and fullname) when the message has none. Returns SM_EX_OK or
 * SM_EX_DATAERR (reported on stderr). */
int sm_prepare_message(struct sm_message *m, bool extract, const char *fullname);

/* sendmail -q and `sluice outbox flush`: forwards the outbox, prints the
 * counts. Returns a sysexits status (EX_TEMPFAIL when mail still waits). */
int sm_flush_command(const struct config *cfg, const char *who);

/* sendmail -bs: an SMTP dialogue on in/out; each message is submitted (or
 * kept) before its 250. Returns the exit status. */
int sm_smtp_dialogue(const struct config *cfg, const struct sm_submit_conf *c, FILE *in, FILE *out);

#endif
