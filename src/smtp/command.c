/* SMTP command-line parsing (RFC 5321 4.1): the first step for every line a
 * client sends in command mode. It only splits verb from argument; the
 * session decides legality and the argument parsers (address.c, sasl.c)
 * judge the rest. Called once per command, so verbs are compared as packed
 * 32-bit words rather than with string calls. */
#include "smtp/command.h"

#include <stdint.h>
#include <string.h>

static const char *const verb_names[SMTP_VERB_COUNT] = {
    [SMTP_VERB_UNKNOWN] = "UNKNOWN", [SMTP_VERB_EHLO] = "EHLO",         [SMTP_VERB_HELO] = "HELO",
    [SMTP_VERB_MAIL] = "MAIL",       [SMTP_VERB_RCPT] = "RCPT",         [SMTP_VERB_DATA] = "DATA",
    [SMTP_VERB_BDAT] = "BDAT",       [SMTP_VERB_RSET] = "RSET",         [SMTP_VERB_NOOP] = "NOOP",
    [SMTP_VERB_QUIT] = "QUIT",       [SMTP_VERB_VRFY] = "VRFY",         [SMTP_VERB_EXPN] = "EXPN",
    [SMTP_VERB_HELP] = "HELP",       [SMTP_VERB_STARTTLS] = "STARTTLS", [SMTP_VERB_AUTH] = "AUTH",
};

/* Four lower-case letters packed in memory order, so that a verb read with
 * memcpy and folded with 0x20 per byte compares as one integer. Folding with
 * 0x20 maps only letters onto letters, so no other byte can match. */
static uint32_t pack4(const char *s)
{
    uint32_t v;
    memcpy(&v, s, 4);
    return v | 0x20202020u;
}

static enum smtp_verb match_verb4(const char *verb)
{
    static const struct {
        char name[5];
        enum smtp_verb verb;
    } verbs4[] = {
        {"mail", SMTP_VERB_MAIL}, {"rcpt", SMTP_VERB_RCPT}, {"data", SMTP_VERB_DATA},
        {"ehlo", SMTP_VERB_EHLO}, {"rset", SMTP_VERB_RSET}, {"quit", SMTP_VERB_QUIT},
        {"noop", SMTP_VERB_NOOP}, {"bdat", SMTP_VERB_BDAT}, {"auth", SMTP_VERB_AUTH},
        {"helo", SMTP_VERB_HELO}, {"vrfy", SMTP_VERB_VRFY}, {"expn", SMTP_VERB_EXPN},
        {"help", SMTP_VERB_HELP},
    };
    uint32_t v = pack4(verb);

    for (size_t i = 0; i < sizeof(verbs4) / sizeof(verbs4[0]); i++) {
        if (pack4(verbs4[i].name) == v)
            return verbs4[i].verb;
    }
    return SMTP_VERB_UNKNOWN;
}

/* A verb octet: printable ASCII except space (RFC 5321 4.1.1 verbs are
 * letters; other printable octets make an unknown, not a malformed, verb). */
static int is_verb_char(unsigned char c)
{
    return c > 0x20 && c < 0x7f;
}

static int is_blank(char c)
{
    return c == ' ' || c == '\t';
}

int smtp_command_parse(const char *line, size_t len, struct smtp_command *cmd)
{
    size_t verb_len = 0;

    cmd->verb = SMTP_VERB_UNKNOWN;
    cmd->arg = line + len;
    cmd->arg_len = 0;

    if (len == 0 || memchr(line, '\0', len) != NULL)
        return -1;
    while (verb_len < len && line[verb_len] != ' ') {
        if (!is_verb_char((unsigned char)line[verb_len]))
            return -1;
        verb_len++;
    }
    if (verb_len == 0)
        return -1;

    const char *arg = line + verb_len;
    const char *end = line + len;
    while (arg < end && is_blank(*arg))
        arg++;
    while (end > arg && is_blank(end[-1]))
        end--;
    cmd->arg = arg;
    cmd->arg_len = (size_t)(end - arg);

    if (verb_len == 4) {
        cmd->verb = match_verb4(line);
    } else if (verb_len == 8 && pack4(line) == pack4("star") && pack4(line + 4) == pack4("ttls")) {
        cmd->verb = SMTP_VERB_STARTTLS;
    }
    return 0;
}

const char *smtp_verb_name(enum smtp_verb verb)
{
    if ((unsigned)verb >= SMTP_VERB_COUNT)
        return verb_names[SMTP_VERB_UNKNOWN];
    return verb_names[verb];
}
