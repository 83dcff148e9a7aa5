/* Authentication of connections (gateway/auth.c): token verification against the secrets
 * server.c loads, the hello that authenticates a connection or refreshes its session, the
 * welcome, and the tags that stand for user ids in logs. */
#ifndef KEFU_GATEWAY_AUTH_H
#define KEFU_GATEWAY_AUTH_H

#include <stddef.h>

#include <jansson.h>

#include "gateway.h"
#include "kefu/mask.h"
#include "kefu/token.h"

/** Verifies a token against the configured secrets, now, and the leeway. */
kf_token_result gw_token_verify(const char *token, size_t len, kf_claims *cl);
/** 1 when the connection's token expired (beyond the leeway); requests then get unauthorized.
 * Any exp is handled, up to INT64_MAX. */
int gw_token_expired(const gw_conn *c);
/** Verifies a token and makes the connection READY (the welcome follows once its presence is
 * stored). On failure answers `unauthorized` to req (when given: a hello frame) and closes with
 * 4401/4402. Returns 0 or -1. */
int gw_conn_authenticate(gw_conn *c, const char *token, size_t len, const json_t *req);
/** The hello request: authenticates a new connection, or extends an authenticated one's session
 * with a fresh token for the same user and role. msg is borrowed. */
void gw_auth_hello(gw_conn *c, json_t *msg);
/** The tag that stands for a user id in logs (kf_mask_user keyed with the first secret). */
void gw_auth_user_tag(char out[KF_USER_TAG_LEN + 1], const char *sub);

#endif
