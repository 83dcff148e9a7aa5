/* Fills in the module interface's entry points (rmapi.h). */
#include "rmapi.h"

#define RM_DEFINE(ret, name, args) ret(*RM_##name) args;
RM_APIS(RM_DEFINE)
#undef RM_DEFINE

int rm_init(RedisModuleCtx *ctx, const char *name, int ver) {
    /* The context's first word is Redis's lookup function: name -> entry point. */
    int (*get_api)(const char *, void *) = (int (*)(const char *, void *))((void **)ctx)[0];
    int missing = 0;
#define RM_FETCH(ret, fn, args) missing |= get_api("RedisModule_" #fn, (void *)&RM_##fn) != RM_OK;
    RM_APIS(RM_FETCH)
#undef RM_FETCH
    if (missing) return RM_ERR;
    RM_SetModuleAttribs(ctx, name, ver, RM_APIVER);
    return RM_OK;
}
