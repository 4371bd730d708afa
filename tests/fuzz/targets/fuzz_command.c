/* Fuzz target for the command line and MAIL/RCPT argument parsers
 * (smtp/command.c, mail/address.c): no crash, no overread, and the results
 * obey the documented invariants. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mail/address.h"
#include "smtp/command.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

static void check_path(const struct smtp_path *p)
{
    size_t n = strnlen(p->addr, sizeof(p->addr));
    CHECK(n < sizeof(p->addr));
    CHECK(n <= SMTP_PATH_MAX - 2);
    CHECK(p->local_len <= n);
    CHECK(p->local_len <= SMTP_LOCAL_PART_MAX);
    if (p->is_null)
        CHECK(n == 0);
    const char *dom = smtp_path_domain(p);
    CHECK(strlen(dom) <= SMTP_DOMAIN_MAX);
}

static void check_mail(const char *arg, size_t len)
{
    struct smtp_path path;
    struct smtp_mail_params mp;
    enum smtp_addr_error e = smtp_parse_mail(arg, len, &path, &mp);
    CHECK(smtp_addr_error_text(e) != NULL);
    if (e == SMTP_ADDR_OK) {
        check_path(&path);
        CHECK(!path.is_utf8 || mp.smtputf8);
        CHECK(strlen(mp.envid) < sizeof(mp.envid));
    } else {
        CHECK(path.addr[0] == '\0');
    }
}

static void check_rcpt(const char *arg, size_t len)
{
    struct smtp_path p1, p2;
    struct smtp_rcpt_params r1, r2;
    enum smtp_addr_error e1 = smtp_parse_rcpt(arg, len, false, &p1, &r1);
    enum smtp_addr_error e2 = smtp_parse_rcpt(arg, len, true, &p2, &r2);
    if (e1 == SMTP_ADDR_OK) {
        /* What is valid without SMTPUTF8 stays valid with it. */
        CHECK(e2 == SMTP_ADDR_OK);
        CHECK(strcmp(p1.addr, p2.addr) == 0);
        CHECK(!p1.is_utf8 && !p1.is_null);
        CHECK(!((r1.notify & SMTP_NOTIFY_NEVER) && r1.notify != SMTP_NOTIFY_NEVER));
        check_path(&p1);
    }
    if (e2 == SMTP_ADDR_OK)
        check_path(&p2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *line = (const char *)data;
    struct smtp_command cmd;

    if (smtp_command_parse(line, size, &cmd) == 0) {
        CHECK(cmd.arg >= line && cmd.arg + cmd.arg_len <= line + size);
        CHECK(cmd.verb < SMTP_VERB_COUNT);
        CHECK(smtp_verb_name(cmd.verb) != NULL);
        if (cmd.verb == SMTP_VERB_MAIL)
            check_mail(cmd.arg, cmd.arg_len);
        else if (cmd.verb == SMTP_VERB_RCPT)
            check_rcpt(cmd.arg, cmd.arg_len);
    } else {
        CHECK(cmd.verb == SMTP_VERB_UNKNOWN);
    }

    /* The argument parsers also take raw input directly. */
    check_mail(line, size);
    check_rcpt(line, size);

    struct smtp_path a, b;
    enum smtp_addr_error ea = smtp_parse_mailbox(line, size, false, &a);
    enum smtp_addr_error eb = smtp_parse_mailbox(line, size, true, &b);
    if (ea == SMTP_ADDR_OK) {
        CHECK(eb == SMTP_ADDR_OK);
        /* An accepted mailbox is recorded exactly as given. */
        CHECK(strlen(a.addr) == size && memcmp(a.addr, line, size) == 0);
        check_path(&a);
    }
    if (eb == SMTP_ADDR_OK) {
        CHECK(strlen(b.addr) == size && memcmp(b.addr, line, size) == 0);
        CHECK(smtp_utf8_valid(b.addr, size));
    }
    return 0;
}
