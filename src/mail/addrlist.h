/* RFC 5322 3.4 address lists as they stand in To, Cc, Bcc, From and
 * Reply-To: mailboxes with or without display names, groups, comments and
 * quoted strings. The sendmail entry reads recipients from a header with it
 * (-t) and the message composer splits "Name <addr>" with it. Pure. */
#ifndef SLUICE_MAIL_ADDRLIST_H
#define SLUICE_MAIL_ADDRLIST_H

#include <stddef.h>

/* More mailboxes than this in one list is refused, not truncated. */
#define ADDRLIST_MAX 1000
/* A display name, unquoted, longer than this is refused. */
#define ADDRLIST_NAME_MAX 512

struct addrlist_entry {
    char *name; /* display name, unquoted and unescaped, "" when none; not decoded from
                   RFC 2047 encoded words */
    char *addr; /* "local@domain" as written (a quoted local part keeps its quotes),
                   valid by smtp_parse_mailbox with UTF-8 allowed */
};

struct addrlist {
    struct addrlist_entry *v;
    size_t n;
};

/* Parses the field value s[0..len) (unfolded or folded: CRLF followed by
 * white space counts as white space). Group names are dropped, their members
 * kept; empty list elements are skipped. Returns 0 and fills *out (allocates;
 * addrlist_free it), or -1 with a message in err for a syntax error, an
 * invalid address, a NUL or bare CR/LF, or more than ADDRLIST_MAX mailboxes
 * (*out is then empty). */
int addrlist_parse(const char *s, size_t len, struct addrlist *out, char *err, size_t errlen);

void addrlist_free(struct addrlist *l);

#endif
