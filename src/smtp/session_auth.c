/* SMTP AUTH (RFC 4954) inside a submission session: PLAIN (RFC 4616),
 * LOGIN and SCRAM-SHA-256 (RFC 7677). An API key or a password the login
 * cache remembers is answered on the loop; every other password check runs
 * on a worker. Failures are slowed down and then blocked per address, and
 * every buffer that held a secret is wiped once used. */
#include "smtp/session_int.h"

#include "core/config.h"
#include "core/log.h"
#include "core/relay.h"
#include "core/base64.h"
#include "core/worker.h"
#include "net/listener.h"
#include "policy/creds.h"
#include "policy/policy.h"
#include "policy/ratelimit.h"
#include "policy/users.h"
#include "mail/scram.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static void on_auth_delay(evutil_socket_t fd, short what, void *arg);

/* A client known from here on: the credential (owned by the session from
 * now), for MAIL's rules, the events and the spool's auth= metadata. */
void session_set_identity(struct session *s, const char *method, struct cred *c, uint64_t gen)
{
    session_logout(s);
    if (s->unauth_slot) {
        listeners_authenticated(s->r->listeners, (struct sockaddr *)&s->peer);
        s->unauth_slot = false;
    }
    s->authed = true;
    s->cred = c;
    s->cred_gen = gen;
    s->auth_method = method;
    snprintf(s->auth_user, sizeof s->auth_user, "%s", c->name);
    events_auth(s->r, s->ip, method, c->name, true, NULL);
}

static void auth_succeeded(struct session *s, const char *method, struct cred *c, uint64_t gen)
{
    session_enter_state(s, ST_READY);
    session_set_identity(s, method, c, gen);
    session_reply(s, "235 2.7.0 Authentication successful");
}

/* The address made too many failed attempts: 421 and close (RFC 5321
 * 3.8), for this attempt and every new one until the block ends. */
static void auth_blocked(struct session *s, const struct authfail_verdict *v)
{
    char line[AUTHZ_REPLY_MAX];
    if (authfail_reply(v, s->ip, line, sizeof line) < 0)
        snprintf(line, sizeof line, "421 4.7.0 Too many failed authentications");
    session_reply(s, "%s", line);
    events_security(s->r, s->ip, "auth_blocked", line);
    session_close_when_flushed(s);
}

/* RFC 4954 6: 535 for bad credentials; the text never says which part was
 * wrong, nor whether the user exists. */
static bool auth_fail_reply(struct session *s)
{
    return !session_command_error(s, "535 5.7.8 Authentication credentials invalid");
}

/* Counts a failure for the address, then answers at once, later (on a
 * timer: the loop keeps serving others) or, once blocked, with 421.
 * Returns true when the session may read its next command now. */
static bool auth_failed(struct session *s, const char *method, const char *user, const char *why)
{
    struct relay *r = s->r;
    events_auth(r, s->ip, method, user, false, why);
    session_account(s, ACCT_REJECTED, "auth", 0);
    session_enter_state(s, ST_READY);
    struct authfail_verdict v = {0};
    if (r->authfail)
        authfail_record(r->authfail, s->ip, policy_now_ms(), &v);
    if (v.blocked) {
        auth_blocked(s, &v);
        return false;
    }
    if (v.delay_ms == 0)
        return auth_fail_reply(s);
    session_enter_state(s, ST_AUTH_CHECK);
    s->busy++;
    struct timeval tv = {(time_t)(v.delay_ms / 1000), (suseconds_t)(v.delay_ms % 1000) * 1000};
    if (event_base_once(r->base, -1, EV_TIMEOUT, on_auth_delay, s, &tv) < 0) {
        s->busy--;
        session_enter_state(s, ST_READY);
        return auth_fail_reply(s);
    }
    return false;
}

static void on_auth_delay(evutil_socket_t fd, short what, void *arg)
{
    struct session *s = arg;
    (void)fd;
    (void)what;
    s->busy--;
    if (s->dead) {
        session_close(s);
        return;
    }
    session_enter_state(s, ST_READY);
    if (auth_fail_reply(s))
        session_process_input(s);
}

static void auth_work(void *arg)
{
    struct session *s = arg;
    if (policy_check_password(s->r, s->auth_users, s->login_user, s->check_pass, s->check_mech,
                              &s->check) < 0)
        s->check.cred = NULL;
}

static void auth_done(void *arg)
{
    struct session *s = arg;
    s->busy--;
    policy_remember_login(s->r, s->login_user, s->check_pass, &s->check);
    explicit_bzero(s->check_pass, sizeof s->check_pass);
    users_free(s->auth_users);
    s->auth_users = NULL;
    struct cred *c = s->check.cred;
    s->check.cred = NULL;
    if (s->dead) {
        creds_free_cred(c);
        session_close(s);
        return;
    }
    if (c)
        auth_succeeded(s, s->check.method, c, s->check.gen);
    else if (!auth_failed(s, s->check_mech, s->login_user, "invalid credentials"))
        return;
    session_process_input(s);
}

/* PLAIN and LOGIN end here: an API key or a remembered password is
 * answered at once; otherwise argon2id runs on a worker, never on the loop,
 * and only once per connection (235 ends the exchange). */
static void start_auth_check(struct session *s, const char *mech, const char *user,
                             const char *pass)
{
    if (user != s->login_user)
        snprintf(s->login_user, sizeof s->login_user, "%s", user);
    struct policy_login quick;
    if (policy_check_password_quick(s->r, s->login_user, pass, mech, &quick) == 1) {
        auth_succeeded(s, quick.method, quick.cred, quick.gen);
        return;
    }
    snprintf(s->check_pass, sizeof s->check_pass, "%s", pass);
    s->check_mech = mech;
    s->check = (struct policy_login){0};
    s->auth_users = users_ref(s->r->users);
    session_enter_state(s, ST_AUTH_CHECK);
    s->busy++;
    if (worker_submit(s->r->worker, auth_work, auth_done, s) < 0) {
        explicit_bzero(s->check_pass, sizeof s->check_pass);
        users_free(s->auth_users);
        s->auth_users = NULL;
        s->busy--;
        session_enter_state(s, ST_READY);
        session_reply(s, "454 4.7.0 Temporary authentication failure, try again later");
    }
}

void session_scram_end(struct session *s)
{
    scram_server_free(s->scram);
    s->scram = NULL;
}

/* One base64 SCRAM message from the client (RFC 7677, RFC 5802 section 5):
 * the server state machine decides; the session only frames 334/235/535. */
static void scram_input(struct session *s, const char *b64, size_t len)
{
    size_t cap = len / 4 * 3 + 1;
    unsigned char *msg = malloc(cap);
    long n = msg ? base64_decode(b64, len, msg, 0) : -1;
    if (n < 0) {
        free(msg);
        session_scram_end(s);
        session_enter_state(s, ST_READY);
        session_command_error(s, "501 5.5.2 Cannot decode the SCRAM-SHA-256 response");
        return;
    }
    char *server_msg = NULL;
    enum scram_status st = scram_server_step(s->scram, (const char *)msg, (size_t)n,
                                             policy_scram_lookup, s->r, &server_msg);
    explicit_bzero(msg, cap);
    free(msg);
    if (st == SCRAM_CONTINUE && server_msg) {
        size_t ml = strlen(server_msg);
        char *enc = malloc(BASE64_ENCODED_SIZE(ml));
        if (enc) {
            base64_encode(server_msg, ml, enc);
            session_enter_state(s, ST_AUTH_SCRAM);
            session_reply(s, "334 %s", enc);
            free(enc);
            free(server_msg);
            return;
        }
        st = SCRAM_FAILURE;
    }
    free(server_msg);
    char user[SCRAM_NAME_MAX + 1];
    snprintf(user, sizeof user, "%s", scram_server_authcid(s->scram));
    bool temporary = st != SCRAM_SUCCESS && scram_server_error(s->scram) == SCRAM_ERR_TEMPORARY;
    const char *why = scram_server_reason(s->scram);
    char reason[128];
    snprintf(reason, sizeof reason, "%s", why ? why : "failed");
    session_scram_end(s);
    struct cred *c = NULL;
    uint64_t gen = policy_generation(s->r);
    if (st == SCRAM_SUCCESS && creds_lookup(s->r->creds, user, &c) == 0 && !c->revoked) {
        auth_succeeded(s, "SCRAM-SHA-256", c, gen);
        return;
    }
    creds_free_cred(c);
    if (temporary) {
        session_enter_state(s, ST_READY);
        session_reply(s, "454 4.7.0 Temporary authentication failure, try again later");
        return;
    }
    auth_failed(s, "SCRAM-SHA-256", user, reason);
}

static void start_scram(struct session *s, const char *initial, size_t initial_len)
{
    s->scram = policy_scram_new(s->r);
    if (!s->scram) {
        session_reply(s, "454 4.7.0 Temporary authentication failure, try again later");
        return;
    }
    if (!initial) {
        session_enter_state(s, ST_AUTH_SCRAM);
        session_reply(s, "334 ");
        return;
    }
    scram_input(s, initial, initial_len);
}

static bool plain_decode(struct session *s, const char *b64, size_t len, struct sasl_plain *sp)
{
    if (sasl_plain_decode(b64, len, sp) == 0 &&
        (!sp->authzid[0] || strcmp(sp->authzid, sp->authcid) == 0))
        return true;
    explicit_bzero(sp, sizeof *sp);
    session_enter_state(s, ST_READY);
    session_command_error(s, "501 5.5.2 Cannot decode the PLAIN response");
    return false;
}

void session_cmd_auth(struct session *s, const struct smtp_command *c)
{
    if (!session_auth_offered(s)) {
        /* RFC 4954 6 */
        session_command_error(
            s, "538 5.7.11 Encryption required for requested authentication mechanism");
        return;
    }
    if (s->authed) {
        session_reply(s, "503 5.5.1 Already authenticated");
        return;
    }
    struct authfail_verdict v = {0};
    if (s->r->authfail)
        authfail_check(s->r->authfail, s->ip, policy_now_ms(), &v);
    if (v.blocked) {
        auth_blocked(s, &v);
        return;
    }
    char mech[32];
    size_t ml = 0;
    while (ml < c->arg_len && c->arg[ml] != ' ' && ml < sizeof mech - 1) {
        mech[ml] = c->arg[ml];
        ml++;
    }
    mech[ml] = 0;
    const char *initial = ml < c->arg_len ? c->arg + ml + 1 : NULL;
    size_t initial_len = initial ? c->arg_len - ml - 1 : 0;
    if (strcasecmp(mech, "PLAIN") == 0) {
        if (!initial) {
            session_enter_state(s, ST_AUTH_PLAIN);
            session_reply(s, "334 ");
            return;
        }
        struct sasl_plain sp;
        if (!plain_decode(s, initial, initial_len, &sp))
            return;
        start_auth_check(s, "PLAIN", sp.authcid, sp.passwd);
        explicit_bzero(&sp, sizeof sp);
    } else if (strcasecmp(mech, "LOGIN") == 0) {
        if (initial) {
            if (sasl_login_decode(initial, initial_len, s->login_user, sizeof s->login_user) < 0) {
                session_command_error(s, "501 5.5.2 Cannot decode the LOGIN response");
                return;
            }
            session_enter_state(s, ST_AUTH_LOGIN_PASS);
            session_reply(s, "334 UGFzc3dvcmQ6");
            return;
        }
        session_enter_state(s, ST_AUTH_LOGIN_USER);
        session_reply(s, "334 VXNlcm5hbWU6");
    } else if (strcasecmp(mech, "SCRAM-SHA-256") == 0 && s->r->creds) {
        start_scram(s, initial, initial_len);
    } else {
        session_command_error(s, "504 5.5.4 Unrecognized authentication type; use PLAIN, LOGIN or "
                                 "SCRAM-SHA-256");
    }
}

void session_auth_continuation(struct session *s, const char *line, size_t len)
{
    if (len == 1 && line[0] == '*') {
        session_scram_end(s);
        session_enter_state(s, ST_READY);
        session_reply(s, "501 5.0.0 Authentication cancelled");
        return;
    }
    if (s->st == ST_AUTH_SCRAM) {
        scram_input(s, line, len);
    } else if (s->st == ST_AUTH_PLAIN) {
        struct sasl_plain sp;
        if (!plain_decode(s, line, len, &sp))
            return;
        start_auth_check(s, "PLAIN", sp.authcid, sp.passwd);
        explicit_bzero(&sp, sizeof sp);
    } else if (s->st == ST_AUTH_LOGIN_USER) {
        if (sasl_login_decode(line, len, s->login_user, sizeof s->login_user) < 0) {
            session_enter_state(s, ST_READY);
            session_command_error(s, "501 5.5.2 Cannot decode the LOGIN response");
            return;
        }
        session_enter_state(s, ST_AUTH_LOGIN_PASS);
        session_reply(s, "334 UGFzc3dvcmQ6");
    } else {
        char pass[SASL_FIELD_MAX + 1];
        if (sasl_login_decode(line, len, pass, sizeof pass) < 0) {
            session_enter_state(s, ST_READY);
            session_command_error(s, "501 5.5.2 Cannot decode the LOGIN response");
            return;
        }
        start_auth_check(s, "LOGIN", s->login_user, pass);
        explicit_bzero(pass, sizeof pass);
    }
}
