/* Fault injection for the snapshot writer's zero-page decision (test/unit/native-hardening-snapshot.test.ts),
 * loaded with LD_PRELOAD into a node process that uses the addon:
 *   VMDESK_SHIM_MINCORE=absent  mincore() reports every page not resident, as it does for swapped-out memory
 *   VMDESK_SHIM_PAGEMAP=deny    /proc/self/pagemap cannot be opened (hardened kernels, odd containers)
 * Everything else is passed through to libc. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

int mincore(void *addr, size_t len, unsigned char *vec) {
  static int (*real)(void *, size_t, unsigned char *);
  if (getenv("VMDESK_SHIM_MINCORE")) {
    memset(vec, 0, (len + 4095) / 4096);
    return 0;
  }
  if (!real) real = (int (*)(void *, size_t, unsigned char *))dlsym(RTLD_NEXT, "mincore");
  return real(addr, len, vec);
}

static int denied(const char *path) { return getenv("VMDESK_SHIM_PAGEMAP") && path && strcmp(path, "/proc/self/pagemap") == 0; }

#define WRAP_OPEN(name)                                                                  \
  int name(const char *path, int flags, ...) {                                           \
    static int (*real)(const char *, int, ...);                                          \
    int mode = 0;                                                                        \
    if (flags & (O_CREAT | O_TMPFILE)) {                                                 \
      va_list ap;                                                                        \
      va_start(ap, flags);                                                               \
      mode = va_arg(ap, int);                                                            \
      va_end(ap);                                                                        \
    }                                                                                    \
    if (denied(path)) {                                                                  \
      errno = EACCES;                                                                    \
      return -1;                                                                         \
    }                                                                                    \
    if (!real) real = (int (*)(const char *, int, ...))dlsym(RTLD_NEXT, #name);          \
    return real(path, flags, mode);                                                      \
  }
WRAP_OPEN(open)
WRAP_OPEN(open64)

#define WRAP_OPEN2(name)                                                                 \
  int name(const char *path, int flags) {                                                \
    static int (*real)(const char *, int);                                               \
    if (denied(path)) {                                                                  \
      errno = EACCES;                                                                    \
      return -1;                                                                         \
    }                                                                                    \
    if (!real) real = (int (*)(const char *, int))dlsym(RTLD_NEXT, #name);               \
    return real(path, flags);                                                            \
  }
WRAP_OPEN2(__open_2)
WRAP_OPEN2(__open64_2)
