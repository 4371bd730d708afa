/* Accepts connections and hands them to SMTP sessions. Connection limits are
 * checked here, before any TLS or SMTP work is spent on the client. */
#include "net/listener.h"

#include "core/config.h"
#include "core/log.h"
#include "core/relay.h"
#include "net/cidr.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/listener.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define LISTEN_BACKLOG 1024
#define IP_TABLE_SIZE 4096 /* open addressing; must exceed max connections' IPs */

struct ip_slot {
    unsigned char addr[16];
    unsigned count;  /* every connection from the address */
    unsigned unauth; /* of which not yet authenticated */
    bool used;
};

struct listener_set {
    struct relay *r;
    struct evconnlistener *l[2];
    bool implicit[2];
    int n;
    struct ip_slot ips[IP_TABLE_SIZE];
    unsigned total, unauth;
};

static void addr_key(const struct sockaddr *sa, unsigned char key[16])
{
    memset(key, 0, 16);
    if (sa->sa_family == AF_INET)
        memcpy(key + 12, &((const struct sockaddr_in *)sa)->sin_addr, 4);
    else if (sa->sa_family == AF_INET6)
        memcpy(key, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
}

static struct ip_slot *ip_find(struct listener_set *ls, const unsigned char key[16], bool add)
{
    uint32_t h = 2166136261u;
    for (int i = 0; i < 16; i++)
        h = (h ^ key[i]) * 16777619u;
    struct ip_slot *tomb = NULL;
    for (unsigned i = 0; i < IP_TABLE_SIZE; i++) {
        struct ip_slot *s = &ls->ips[(h + i) % IP_TABLE_SIZE];
        if (s->used && memcmp(s->addr, key, 16) == 0)
            return s;
        if (s->used && s->count == 0 && !tomb)
            tomb = s;
        if (!s->used) {
            if (!add)
                return NULL;
            if (tomb)
                s = tomb;
            memcpy(s->addr, key, 16);
            s->used = true;
            s->count = 0;
            return s;
        }
    }
    if (add && tomb) {
        memcpy(tomb->addr, key, 16);
        return tomb;
    }
    return NULL;
}

static struct ip_slot *slot_of(struct listener_set *ls, const struct sockaddr *sa)
{
    unsigned char key[16];
    addr_key(sa, key);
    return ip_find(ls, key, false);
}

void listeners_authenticated(struct listener_set *ls, const struct sockaddr *sa)
{
    if (!ls)
        return;
    struct ip_slot *s = slot_of(ls, sa);
    if (s && s->unauth)
        s->unauth--;
    if (ls->unauth)
        ls->unauth--;
}

void listeners_release(struct listener_set *ls, const struct sockaddr *sa, bool unauth)
{
    if (!ls)
        return;
    if (unauth)
        listeners_authenticated(ls, sa);
    struct ip_slot *s = slot_of(ls, sa);
    if (s && s->count)
        s->count--;
    if (ls->total)
        ls->total--;
}

static void refuse(evutil_socket_t fd, bool implicit_tls, const char *why, const char *ip)
{
    static const char msg[] = "421 4.7.0 Too many connections, try again later\r\n";
    if (!implicit_tls) {
        ssize_t w = write(fd, msg, sizeof msg - 1);
        (void)w;
    }
    log_event(LOG_WARN, "connection.refused", "client_ip", "%s", ip, "reason", "%s", why, NULL);
    evutil_closesocket(fd);
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen,
                      void *arg)
{
    struct listener_set *ls = arg;
    struct relay *r = ls->r;
    bool implicit_tls = false;
    for (int i = 0; i < ls->n; i++)
        if (ls->l[i] == l)
            implicit_tls = ls->implicit[i];
    char ip[INET6_ADDRSTRLEN] = "?";
    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((struct sockaddr_in *)sa)->sin_addr, ip, sizeof ip);
    else if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)sa)->sin6_addr, ip, sizeof ip);
    if (r->draining) {
        evutil_closesocket(fd);
        return;
    }
    if (ls->total >= (unsigned)r->cfg->max_connections) {
        refuse(fd, implicit_tls, "max_connections", ip);
        return;
    }
    unsigned char key[16];
    addr_key(sa, key);
    struct ip_slot *slot = ip_find(ls, key, true);
    if (!slot || slot->count >= (unsigned)r->cfg->max_connections_per_ip) {
        refuse(fd, implicit_tls, "max_connections_per_ip", ip);
        return;
    }
    /* relay_networks clients may send without AUTH: they are as trusted as
     * an authenticated session from the start */
    bool unauth = !(r->relay_nets && cidr_list_match(r->relay_nets, sa));
    if (unauth) {
        if (slot->unauth >= (unsigned)r->cfg->max_unauth_connections_per_ip) {
            refuse(fd, implicit_tls, "max_unauth_connections_per_ip", ip);
            return;
        }
        /* the pool is full: the longest-waiting anonymous session makes
         * room, so a trickle of idle connections cannot lock everyone out */
        if (ls->unauth >= (unsigned)r->cfg->max_unauth_connections &&
            !(r->hooks.session_evict_unauth && r->hooks.session_evict_unauth(r))) {
            refuse(fd, implicit_tls, "max_unauth_connections", ip);
            return;
        }
        slot->unauth++;
        ls->unauth++;
    }
    slot->count++;
    ls->total++;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    r->hooks.session_start(r, fd, sa, salen, implicit_tls, unauth);
}

static void on_accept_error(struct evconnlistener *l, void *arg)
{
    int e = EVUTIL_SOCKET_ERROR();
    log_event(LOG_ERROR, "listener.error", "error", "%s", evutil_socket_error_to_string(e), NULL);
    (void)l;
    (void)arg;
}

int listener_parse_addr(const char *s, struct sockaddr_storage *ss, socklen_t *len)
{
    int l = (int)sizeof *ss;
    memset(ss, 0, sizeof *ss);
    if (evutil_parse_sockaddr_port(s, (struct sockaddr *)ss, &l) < 0)
        return -1;
    if (((struct sockaddr_in *)ss)->sin_port == 0)
        return -1;
    *len = (socklen_t)l;
    return 0;
}

struct listener_set *listeners_open(struct relay *r, char *err, size_t errlen)
{
    struct listener_set *ls = calloc(1, sizeof *ls);
    if (!ls) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    ls->r = r;
    const char *addrs[2] = {r->cfg->listen_submission, r->cfg->listen_smtps};
    for (int i = 0; i < 2; i++) {
        if (!addrs[i] || !*addrs[i])
            continue;
        struct sockaddr_storage ss;
        socklen_t sl;
        if (listener_parse_addr(addrs[i], &ss, &sl) < 0) {
            snprintf(err, errlen, "bad listen address '%s'", addrs[i]);
            listeners_free(ls);
            return NULL;
        }
        struct evconnlistener *l = evconnlistener_new_bind(
            r->base, on_accept, ls,
            LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC, LISTEN_BACKLOG,
            (struct sockaddr *)&ss, (int)sl);
        if (!l) {
            snprintf(err, errlen, "cannot listen on %s: %s", addrs[i], strerror(errno));
            listeners_free(ls);
            return NULL;
        }
        evconnlistener_set_error_cb(l, on_accept_error);
        ls->l[ls->n] = l;
        ls->implicit[ls->n] = i == 1;
        ls->n++;
        log_event(LOG_INFO, "listener.ready", "address", "%s", addrs[i], "tls", "%s",
                  i == 1 ? "implicit" : "starttls", NULL);
    }
    return ls;
}

void listeners_stop(struct listener_set *ls)
{
    if (!ls)
        return;
    for (int i = 0; i < ls->n; i++)
        evconnlistener_free(ls->l[i]);
    ls->n = 0;
}

void listeners_free(struct listener_set *ls)
{
    listeners_stop(ls);
    free(ls);
}
