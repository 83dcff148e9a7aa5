/* LD_PRELOAD shim for test_master.py: waitpid() first sleeps $KEFU_TEST_WAITPID_DELAY_MS.
 * It widens the moment between a caller's last look at its signal flags and its wait, so a
 * signal sent then, which a blocking waitpid() would leave unhandled, is not left to luck. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>

pid_t waitpid(pid_t pid, int *status, int options) {
    static pid_t (*real)(pid_t, int *, int);
    if (!real) real = (pid_t(*)(pid_t, int *, int))dlsym(RTLD_NEXT, "waitpid");
    const char *d = getenv("KEFU_TEST_WAITPID_DELAY_MS");
    if (d) {
        long ms = atol(d);
        struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
        int saved = errno;
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {} /* the whole delay, signals or not */
        errno = saved;
    }
    return real(pid, status, options);
}
