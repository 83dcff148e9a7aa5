/* kefu_redis.so: KEFU.MSGSEND, lua/redis/msg_send.lua as a Redis module command.
 *
 * The gateway stores the msg.send requests of a loop iteration with one call of the msg_send
 * script. That script is most of Redis's work per relayed message, and most of the script's cost
 * is Lua itself (every string made into a Lua string is hashed byte by byte, every redis.call
 * converts its arguments and reply). This command does the same steps in C on the server's own
 * data structures. Same arguments as the script after its sha, same replies, same effects:
 *
 *   KEFU.MSGSEND numkeys meta1 msgs1 ... maxlen winbytes user role name text cid tok ...
 *
 * It replicates (and writes to the AOF) plain XADD with the id it assigned, HSET and, when a trim
 * removed entries, XTRIM MAXLEN = <length left>: replicas and AOF replays need no module.
 *
 * A gateway uses it on every server where COMMAND INFO finds it, and the script elsewhere
 * (docs/operations.md, "The kefu Redis module"). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rmapi.h"

#define FIELD_MAX 600 /* "cids:" / "sup:" and a user id (the gateway bounds ids far below) */

static RedisModuleString *names[5]; /* the stream entry's field names, made once */

static void reply_error(RedisModuleCtx *ctx, const char *code) {
    RM_ReplyWithArray(ctx, 2);
    RM_ReplyWithStringBuffer(ctx, "E", 1);
    RM_ReplyWithStringBuffer(ctx, code, strlen(code));
}

static const char *str(RedisModuleString *s, size_t *len) {
    static const char empty[] = "";
    if (!s) {
        *len = 0;
        return empty;
    }
    return RM_StringPtrLen(s, len);
}

static int equal(RedisModuleString *a, const char *b, size_t blen) {
    size_t alen;
    const char *p = str(a, &alen);
    return a && alen == blen && memcmp(p, b, blen) == 0;
}

/* The reply of a stored or repeated message: kind, id, prev, customer, agent, the joined
 * supervisors ("sups" is a '\n'-joined list; empty entries skipped, as the script does). */
static void reply_stored(RedisModuleCtx *ctx, const char *kind, const char *id, size_t idlen,
                         const char *prev, size_t prevlen, RedisModuleString *customer,
                         RedisModuleString *agent, RedisModuleString *sups) {
    size_t slen, len;
    const char *s = str(sups, &slen);
    RM_ReplyWithArray(ctx, RM_POSTPONED_LEN);
    RM_ReplyWithStringBuffer(ctx, kind, 1);
    RM_ReplyWithStringBuffer(ctx, id, idlen);
    RM_ReplyWithStringBuffer(ctx, prev, prevlen);
    const char *p = str(customer, &len);
    RM_ReplyWithStringBuffer(ctx, p, len);
    p = str(agent, &len);
    RM_ReplyWithStringBuffer(ctx, p, len);
    long n = 5;
    for (size_t i = 0; i < slen;) {
        const char *nl = memchr(s + i, '\n', slen - i);
        size_t end = nl ? (size_t)(nl - s) : slen;
        if (end > i) {
            RM_ReplyWithStringBuffer(ctx, s + i, end - i);
            n++;
        }
        i = end + 1;
    }
    RM_ReplySetArrayLength(ctx, n);
}

static int fmt_id(char *buf, size_t size, const RedisModuleStreamID *id) {
    return snprintf(buf, size, "%llu-%llu", (unsigned long long)id->ms, (unsigned long long)id->seq);
}

/* One message: a = its six values (user, role, name, text, cid, tok). Replies exactly one
 * element. */
static void store(RedisModuleCtx *ctx, RedisModuleString *metak, RedisModuleString *msgsk,
                  long long maxlen, long long winbytes, RedisModuleString **a) {
    size_t ulen, rlen, toklen;
    const char *user = RM_StringPtrLen(a[0], &ulen);
    const char *role = RM_StringPtrLen(a[1], &rlen);
    const char *tok = RM_StringPtrLen(a[5], &toklen);
    char wf[FIELD_MAX], sf[FIELD_MAX];
    if (ulen + 6 > FIELD_MAX || memchr(user, '\0', ulen) || toklen == 0) {
        RM_Log(ctx, "warning", "kefu.msgsend: bad arguments");
        reply_error(ctx, "internal");
        return;
    }
    snprintf(wf, sizeof(wf), "cids:%s", user);
    snprintf(sf, sizeof(sf), "sup:%s", user);

    RedisModuleKey *meta = RM_OpenKey(ctx, metak, RM_READ | RM_WRITE);
    int mt = RM_KeyType(meta);
    if (mt != RM_KEYTYPE_HASH && mt != RM_KEYTYPE_EMPTY) {
        RM_Log(ctx, "warning", "kefu.msgsend: %s is not a hash", RM_StringPtrLen(metak, NULL));
        RM_CloseKey(meta);
        reply_error(ctx, "internal");
        return;
    }
    RedisModuleString *customer = NULL, *agent = NULL, *state = NULL, *first = NULL,
                      *sups = NULL, *joined = NULL, *last = NULL, *win = NULL;
    /* each field read costs a lookup and two allocations: only those this message needs */
    if (mt == RM_KEYTYPE_HASH)
        RM_HashGet(meta, RM_HASH_CFIELDS, "customer", &customer, "agent", &agent, "state", &state,
                   "sups", &sups, "last", &last, wf, &win, NULL);
    if (!customer && !state) {
        RM_CloseKey(meta);
        reply_error(ctx, "not_found");
        return;
    }
    int customer_role = rlen == 8 && memcmp(role, "customer", 8) == 0;
    int ok = customer_role ? equal(customer, user, ulen) : equal(agent, user, ulen);
    if (!ok && ((rlen == 10 && memcmp(role, "supervisor", 10) == 0) ||
                (rlen == 5 && memcmp(role, "admin", 5) == 0))) {
        RM_HashGet(meta, RM_HASH_CFIELDS, sf, &joined, NULL);
        ok = joined != NULL;
    }
    if (ok && !customer_role) RM_HashGet(meta, RM_HASH_CFIELDS, "first_response", &first, NULL);
    if (!ok) {
        RM_CloseKey(meta);
        reply_error(ctx, "forbidden");
        return;
    }

    size_t wlen;
    const char *w = str(win, &wlen);
    const char *at = wlen >= toklen ? memmem(w, wlen, tok, toklen) : NULL;
    if (at) { /* a retry: answer with the first attempt's id */
        const char *from = at + toklen;
        const char *to = memchr(from, '\n', (size_t)(w + wlen - from));
        RM_CloseKey(meta);
        reply_stored(ctx, "D", from, (size_t)((to ? to : w + wlen) - from), "", 0, customer, agent,
                     sups);
        return;
    }
    if (equal(state, "closed", 6)) {
        RM_CloseKey(meta);
        reply_error(ctx, "conflict");
        return;
    }

    RedisModuleKey *msgs = RM_OpenKey(ctx, msgsk, RM_READ | RM_WRITE);
    int st = RM_KeyType(msgs);
    if (st != RM_KEYTYPE_STREAM && st != RM_KEYTYPE_EMPTY) {
        RM_Log(ctx, "warning", "kefu.msgsend: %s is not a stream", RM_StringPtrLen(msgsk, NULL));
        RM_CloseKey(msgs);
        RM_CloseKey(meta);
        reply_error(ctx, "internal");
        return;
    }
    char prev[48] = "";
    size_t prevlen = 0;
    if (last) {
        const char *p = RM_StringPtrLen(last, &prevlen);
        if (prevlen >= sizeof(prev)) prevlen = sizeof(prev) - 1;
        memcpy(prev, p, prevlen);
        prev[prevlen] = '\0';
    } else if (st == RM_KEYTYPE_STREAM &&
               RM_StreamIteratorStart(msgs, RM_STREAM_ITERATOR_REVERSE, NULL, NULL) == RM_OK) {
        /* a conversation stored before "last" was kept: read it from the stream once */
        RedisModuleStreamID tail;
        long nf;
        if (RM_StreamIteratorNextID(msgs, &tail, &nf) == RM_OK)
            prevlen = (size_t)fmt_id(prev, sizeof(prev), &tail);
        RM_StreamIteratorStop(msgs);
    }

    RedisModuleString *fields[10];
    for (int i = 0; i < 5; i++) fields[2 * i] = names[i], fields[2 * i + 1] = a[i];
    RedisModuleStreamID sid;
    if (RM_StreamAdd(msgs, RM_STREAM_ADD_AUTOID, &sid, fields, 5) != RM_OK) {
        RM_Log(ctx, "warning", "kefu.msgsend: XADD to %s failed", RM_StringPtrLen(msgsk, NULL));
        RM_CloseKey(msgs);
        RM_CloseKey(meta);
        reply_error(ctx, "internal");
        return;
    }
    char id[48];
    size_t idlen = (size_t)fmt_id(id, sizeof(id), &sid);
    RM_Replicate(ctx, "XADD", "sbcscscscscs", msgsk, id, idlen, "from", a[0], "role", a[1],
                 "name", a[2], "text", a[3], "cid", a[4]);
    if ((long long)RM_ValueLength(msgs) > maxlen &&
        RM_StreamTrimByLength(msgs, RM_STREAM_TRIM_APPROX, maxlen) > 0)
        /* the replicas trim the same entries: they hold the same stream */
        RM_Replicate(ctx, "XTRIM", "sccl", msgsk, "MAXLEN", "=", (long long)RM_ValueLength(msgs));
    RM_CloseKey(msgs);

    /* The window with this cid's entry appended, cut from the front past winbytes at an entry
     * boundary. */
    size_t nlen = wlen + toklen + idlen;
    char nbuf[4096];
    char *nw = nlen <= sizeof(nbuf) ? nbuf : malloc(nlen);
    if (!nw) {
        RM_CloseKey(meta);
        reply_error(ctx, "internal");
        return;
    }
    memcpy(nw, w, wlen);
    memcpy(nw + wlen, tok, toklen);
    memcpy(nw + wlen + toklen, id, idlen);
    const char *cut = nw;
    if ((long long)nlen > winbytes) {
        size_t from = nlen - (size_t)winbytes;
        const char *nl = memchr(nw + from, '\n', nlen - from);
        if (nl) cut = nl;
    }
    RedisModuleString *nws = RM_CreateString(ctx, cut, nlen - (size_t)(cut - nw));
    if (nw != nbuf) free(nw);
    RedisModuleString *ids = RM_CreateString(ctx, id, idlen);
    size_t nwlen;
    const char *nwp = RM_StringPtrLen(nws, &nwlen);
    if (!customer_role && !first) {
        RM_HashSet(meta, RM_HASH_CFIELDS, "last", ids, wf, nws, "first_response", ids, NULL);
        RM_Replicate(ctx, "HSET", "scbcbcb", metak, "last", id, idlen, wf, nwp, nwlen,
                     "first_response", id, idlen);
    } else {
        RM_HashSet(meta, RM_HASH_CFIELDS, "last", ids, wf, nws, NULL);
        RM_Replicate(ctx, "HSET", "scbcb", metak, "last", id, idlen, wf, nwp, nwlen);
    }
    RM_CloseKey(meta);
    reply_stored(ctx, "S", id, idlen, prev, prevlen, customer, agent, sups);
}

static int parse_numkeys(RedisModuleString **argv, int argc, long long *nk) {
    return argc >= 2 && RM_StringToLongLong(argv[1], nk) == RM_OK && *nk >= 0 && *nk % 2 == 0 &&
           2 + *nk + 2 + 3 * *nk == argc;
}

static int msgsend(RedisModuleCtx *ctx, RedisModuleString **argv, int argc) {
    long long nk;
    if (RM_IsKeysPositionRequest(ctx)) {
        if (parse_numkeys(argv, argc, &nk))
            for (int i = 0; i < nk; i++) RM_KeyAtPos(ctx, 2 + i);
        return RM_OK;
    }
    if (!parse_numkeys(argv, argc, &nk)) return RM_WrongArity(ctx);
    RM_AutoMemory(ctx);
    long long maxlen, winbytes;
    RedisModuleString **av = argv + 2 + nk;
    if (RM_StringToLongLong(av[0], &maxlen) != RM_OK || maxlen < 1 ||
        RM_StringToLongLong(av[1], &winbytes) != RM_OK || winbytes < 1)
        return RM_ReplyWithError(ctx, "ERR kefu.msgsend: maxlen and winbytes must be positive");
    long n = (long)(nk / 2);
    RM_ReplyWithArray(ctx, n);
    for (long i = 0; i < n; i++) store(ctx, argv[2 + 2 * i], argv[3 + 2 * i], maxlen, winbytes, av + 2 + 6 * i);
    return RM_OK;
}

__attribute__((visibility("default"))) int RedisModule_OnLoad(RedisModuleCtx *ctx, RedisModuleString **argv, int argc) {
    (void)argv, (void)argc;
    if (rm_init(ctx, "kefu", 1) != RM_OK) return RM_ERR;
    static const char *const n[5] = {"from", "role", "name", "text", "cid"};
    for (int i = 0; i < 5; i++) names[i] = RM_CreateString(NULL, n[i], strlen(n[i]));
    if (RM_CreateCommand(ctx, "kefu.msgsend", msgsend, "write deny-oom getkeys-api", 0, 0, 0) !=
        RM_OK)
        return RM_ERR;
    return RM_OK;
}
