/* The part of the Redis module interface (API version 1, Redis 7.0 and later) that
 * kefu_redis.so uses, declared here because Debian ships no header for it. Redis hands a module
 * one lookup function (the first word of the context passed to RedisModule_OnLoad); every other
 * entry point is fetched through it by name. Values are those of the published interface. */
#ifndef KEFU_RMAPI_H
#define KEFU_RMAPI_H

#include <stddef.h>
#include <stdint.h>

#define RM_OK 0
#define RM_ERR 1
#define RM_APIVER 1

#define RM_READ (1 << 0)
#define RM_WRITE (1 << 1)

#define RM_KEYTYPE_EMPTY 0
#define RM_KEYTYPE_HASH 3
#define RM_KEYTYPE_STREAM 7

#define RM_HASH_NONE 0
#define RM_HASH_CFIELDS (1 << 2)

#define RM_STREAM_ADD_AUTOID (1 << 0)
#define RM_STREAM_ITERATOR_REVERSE (1 << 1)
#define RM_STREAM_TRIM_APPROX (1 << 0)

#define RM_POSTPONED_LEN -1 /* ReplyWithArray: the length follows in ReplySetArrayLength */

typedef struct RedisModuleCtx RedisModuleCtx;
typedef struct RedisModuleKey RedisModuleKey;
typedef struct RedisModuleString RedisModuleString;
typedef struct RedisModuleStreamID {
    uint64_t ms;
    uint64_t seq;
} RedisModuleStreamID;
typedef int (*RedisModuleCmdFunc)(RedisModuleCtx *ctx, RedisModuleString **argv, int argc);

/* Each API entry point is a pointer filled in by rm_init(). */
#define RM_APIS(X)                                                                                \
    X(int, CreateCommand, (RedisModuleCtx *, const char *, RedisModuleCmdFunc, const char *, int,  \
                           int, int))                                                              \
    X(void, SetModuleAttribs, (RedisModuleCtx *, const char *, int, int))                           \
    X(int, WrongArity, (RedisModuleCtx *))                                                         \
    X(int, IsKeysPositionRequest, (RedisModuleCtx *))                                              \
    X(void, KeyAtPos, (RedisModuleCtx *, int))                                                     \
    X(void, AutoMemory, (RedisModuleCtx *))                                                        \
    X(RedisModuleKey *, OpenKey, (RedisModuleCtx *, RedisModuleString *, int))                     \
    X(void, CloseKey, (RedisModuleKey *))                                                          \
    X(int, KeyType, (RedisModuleKey *))                                                            \
    X(size_t, ValueLength, (RedisModuleKey *))                                                     \
    X(int, HashGet, (RedisModuleKey *, int, ...))                                                  \
    X(int, HashSet, (RedisModuleKey *, int, ...))                                                  \
    X(int, StreamAdd, (RedisModuleKey *, int, RedisModuleStreamID *, RedisModuleString **,         \
                       int64_t))                                                                   \
    X(long long, StreamTrimByLength, (RedisModuleKey *, int, long long))                           \
    X(int, StreamIteratorStart, (RedisModuleKey *, int, RedisModuleStreamID *,                     \
                                 RedisModuleStreamID *))                                           \
    X(int, StreamIteratorNextID, (RedisModuleKey *, RedisModuleStreamID *, long *))                \
    X(int, StreamIteratorStop, (RedisModuleKey *))                                                 \
    X(int, Replicate, (RedisModuleCtx *, const char *, const char *, ...))                         \
    X(RedisModuleString *, CreateString, (RedisModuleCtx *, const char *, size_t))                 \
    X(const char *, StringPtrLen, (const RedisModuleString *, size_t *))                           \
    X(int, StringToLongLong, (const RedisModuleString *, long long *))                             \
    X(int, ReplyWithArray, (RedisModuleCtx *, long))                                               \
    X(void, ReplySetArrayLength, (RedisModuleCtx *, long))                                         \
    X(int, ReplyWithError, (RedisModuleCtx *, const char *))                                       \
    X(int, ReplyWithStringBuffer, (RedisModuleCtx *, const char *, size_t))                        \
    X(int, ReplyWithString, (RedisModuleCtx *, RedisModuleString *))                               \
    X(void, Log, (RedisModuleCtx *, const char *, const char *, ...))

#define RM_DECLARE(ret, name, args) extern ret(*RM_##name) args;
RM_APIS(RM_DECLARE)
#undef RM_DECLARE

/* Fetches every entry point; RM_ERR if this Redis lacks one (older than 7.0). */
int rm_init(RedisModuleCtx *ctx, const char *name, int ver);

#endif
