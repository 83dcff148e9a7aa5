/* Authentication of connections: a token verified against the configured secrets (the query
 * string's at the upgrade, or a hello's), the identity it carries, the welcome once presence is
 * stored, and session refresh by a later hello. */
#include "auth.h"

#include <stdio.h>
#include <string.h>

#include "kefu/alloc.h"
#include "kefu/log.h"
#include "request.h"

kf_token_result gw_token_verify(const char *token, size_t len, kf_claims *cl) {
    return kf_token_verify(token, len, (const char *const *)gw->secrets, gw->nsecrets,
                           (long long)(gw_now_ms() / 1000), gw->opt.jwt_leeway_s, cl);
}

int gw_token_expired(const gw_conn *c) {
    /* The token's exp is whatever a signer put there, up to INT64_MAX: exp + leeway would
     * overflow (undefined; a release build then refused every request of the connection).
     * now - leeway cannot: now is a current time and the leeway at most an hour. */
    return gw_now_ms() / 1000 - gw->opt.jwt_leeway_s > c->ident.exp;
}

void gw_auth_user_tag(char out[KF_USER_TAG_LEN + 1], const char *sub) {
    const char *key = gw->nsecrets ? gw->secrets[0] : "";
    kf_mask_user(out, key, strlen(key), sub);
}

/* Presence is stored (or failed: then pushes reach the user through the resync): welcome. */
static void on_attached(gw_conn *c, const char *err) {
    if (!gw_conn_alive(c)) return;
    if (err) {
        kf_warn("conn %llu: presence not stored: %s", (unsigned long long)c->id, err);
    }
    json_t *w = json_pack("{s:s, s:s, s:s, s:s, s:I}", "type", "welcome", "user", c->ident.sub,
                          "role", kf_role_name((kf_role)c->ident.role), "node", gw->node,
                          "server_time", (json_int_t)gw_now_ms());
    if (c->hello_req) {
        json_object_set_new(w, "req", c->hello_req);
        c->hello_req = NULL;
    }
    gw_conn_send(c, w);
    json_decref(w);
}

int gw_conn_authenticate(gw_conn *c, const char *token, size_t len, const json_t *req) {
    kf_claims cl;
    kf_token_result r = gw_token_verify(token, len, &cl);
    if (r != KF_TOKEN_OK) {
        static char reasons[8][48];
        snprintf(reasons[r & 7], sizeof(reasons[0]), "invalid token: %s", kf_token_result_str(r));
        kf_info("conn %llu: authentication failed: %s", (unsigned long long)c->id,
                kf_token_result_str(r));
        if (req) gw_reply_error(c, req, "unauthorized", reasons[r & 7]);
        if (r == KF_TOKEN_EXPIRED)
            gw_conn_close(c, CLOSE_AUTH_EXPIRED, 4402, "token expired");
        else
            gw_conn_close(c, CLOSE_AUTH_INVALID, 4401, reasons[r & 7]);
        return -1;
    }
    c->ident.sub = kf_strdup(cl.sub);
    c->ident.name = kf_strdup(cl.name[0] ? cl.name : cl.sub);
    c->ident.skills = cl.skills[0] ? kf_strdup(cl.skills) : NULL;
    c->ident.channel = cl.channel[0] ? kf_strdup(cl.channel) : "";
    c->ident.level = (uint8_t)cl.level;
    c->ident.max_chats = (uint16_t)cl.max_chats;
    c->ident.exp = cl.exp;
    GW_M->conns_by_role[0]--;
    c->ident.role = (uint8_t)cl.role;
    GW_M->conns_by_role[c->ident.role]++;
    gw_conn_set_state(c, CONN_READY);
    if (req && !json_is_null(req)) c->hello_req = json_incref((json_t *)req);
    if (kf_log_level <= KF_LOG_INFO) {
        /* docs/operations.md promises no user id in the logs: whatever the id looks like (a
         * phone number, an address, a name), only its keyed tag shows */
        char tag[KF_USER_TAG_LEN + 1];
        gw_auth_user_tag(tag, cl.sub);
        kf_info("conn %llu: authenticated as %s, user %s", (unsigned long long)c->id,
                kf_role_name(cl.role), tag);
    }
    gw_router_attach(c, on_attached);
    return 0;
}

void gw_auth_hello(gw_conn *c, json_t *msg) {
    const char *token;
    json_t *req = json_object_get(msg, "req");
    json_t *t = json_object_get(msg, "token");
    if (gw_conn_authenticating(c)) {
        if (!t || !json_is_string(t) || json_string_length(t) == 0) {
            if (req) gw_reply_error(c, req, "unauthorized", "invalid token: missing");
            gw_conn_close(c, CLOSE_AUTH_INVALID, 4401, "invalid token: missing");
            return;
        }
        gw_conn_authenticate(c, json_string_value(t), json_string_length(t), req ? req : json_null());
        return;
    }
    /* Already authenticated: a fresh token for the same user extends the session. */
    if (gw_get_str(c, msg, "token", 1, 4096, &token) < 0) return;
    kf_claims cl;
    kf_token_result r = gw_token_verify(token, strlen(token), &cl);
    if (r != KF_TOKEN_OK) {
        gw_reply_error(c, req, "unauthorized", kf_token_result_str(r));
        return;
    }
    if (strcmp(cl.sub, c->ident.sub) != 0 || (uint8_t)cl.role != c->ident.role) {
        gw_reply_error(c, req, "forbidden", "a session cannot change user or role");
        return;
    }
    c->ident.exp = cl.exp;
    gw_reply_ok(c, req, json_pack("{s:I}", "exp", (json_int_t)cl.exp));
}
