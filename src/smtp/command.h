/* SMTP command-line parsing (RFC 5321 section 4.1): splits one received line
 * into a verb and its argument. Pure: no I/O, no allocation, no globals. */
#ifndef SLUICE_SMTP_COMMAND_H
#define SLUICE_SMTP_COMMAND_H

#include <stddef.h>

/* RFC 5321 4.5.3.1.4: a command line is at most 512 octets including CRLF. */
#define SMTP_COMMAND_LINE_MAX 512

enum smtp_verb {
    SMTP_VERB_UNKNOWN = 0,
    SMTP_VERB_EHLO,
    SMTP_VERB_HELO,
    SMTP_VERB_MAIL,
    SMTP_VERB_RCPT,
    SMTP_VERB_DATA,
    SMTP_VERB_BDAT,
    SMTP_VERB_RSET,
    SMTP_VERB_NOOP,
    SMTP_VERB_QUIT,
    SMTP_VERB_VRFY,
    SMTP_VERB_EXPN,
    SMTP_VERB_HELP,
    SMTP_VERB_STARTTLS,
    SMTP_VERB_AUTH,
    SMTP_VERB_COUNT
};

struct smtp_command {
    enum smtp_verb verb;
    const char *arg; /* points into the line; never NULL, may be empty */
    size_t arg_len;  /* argument with surrounding spaces removed */
};

/* Parses `line` (len bytes, CRLF already removed). Verbs are case-insensitive.
 * Returns 0 on success. Returns -1 when the line is not a command at all
 * (empty, NUL byte, non-ASCII verb); then cmd->verb is SMTP_VERB_UNKNOWN.
 * An unknown but well-formed verb returns 0 with SMTP_VERB_UNKNOWN. */
int smtp_command_parse(const char *line, size_t len, struct smtp_command *cmd);

/* Upper-case name of a verb, e.g. "MAIL"; "UNKNOWN" for SMTP_VERB_UNKNOWN. */
const char *smtp_verb_name(enum smtp_verb verb);

#endif
