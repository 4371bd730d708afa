/* Deadlines of a submission session, against slow clients (slowloris):
 * the idle timeouts reset on every read, so a client sending one octet at a
 * time would hold a connection for ever. These bound the whole of a command
 * line, the whole of a transaction, and the content by a minimum average
 * rate. Pure: times are milliseconds on the caller's clock. */
#ifndef SLUICE_SMTP_DEADLINE_H
#define SLUICE_SMTP_DEADLINE_H

#include <stdbool.h>
#include <stdint.h>

struct config;

enum deadline_phase {
    DEADLINE_COMMAND, /* waiting for a command line (or a SASL line, or a TLS handshake) */
    DEADLINE_CONTENT, /* receiving DATA or a BDAT chunk */
    DEADLINE_PAUSED,  /* the server is working (AUTH check, spool commit): no deadline */
};

enum deadline_kind { DEADLINE_NONE = 0, DEADLINE_LINE, DEADLINE_TRANSACTION, DEADLINE_RATE };

struct deadline_clock {
    int64_t line_ms;        /* the last reply: the next command line is due from here */
    int64_t txn_ms;         /* MAIL accepted; 0 outside a transaction */
    int64_t content_ms;     /* DATA answered 354 or the first BDAT arrived */
    uint64_t content_bytes; /* content octets received since content_ms */
};

/* The earliest deadline that applies, in ms, and which one it is (kind).
 * DEADLINE_NONE with INT64_MAX when none applies. */
int64_t deadline_due(const struct config *cfg, enum deadline_phase phase,
                     const struct deadline_clock *c, enum deadline_kind *kind);

/* Words for a 421 reply and the log: "command line", "transaction",
 * "minimum data rate". */
const char *deadline_kind_name(enum deadline_kind kind);

#endif
