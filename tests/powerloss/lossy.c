/*
 * lossy.so: an LD_PRELOAD shim that lets a test simulate a power loss on one directory.
 *
 * A real disk keeps only what was fsynced when the power goes; the page cache is lost.
 * Killing a process (SIGKILL) loses nothing the process wrote: the kernel still has it.
 * This shim closes that gap. Before every write to a file under $LOSSY_DIR it appends
 * the bytes the write is about to overwrite (and the file's size) to $LOSSY_JOURNAL;
 * after every successful fsync/fdatasync of such a file it appends a sync record. A
 * "power loss" is then: SIGKILL the process, and undo, newest first, every write of each
 * file that came after that file's last sync (`nanogrid` tests do it in Rust: see
 * tests/e2e/cluster/powerloss.rs). What is left is what a disk that honours fsync and
 * nothing else would hold.
 *
 * Model limits, on purpose: directory operations (create, rename, unlink) count as
 * durable at once (as on a journalling file system that orders metadata), and only
 * write/pwrite/writev/pwritev/ftruncate/fallocate and O_TRUNC opens through file
 * descriptors (also dup'ed ones) are tracked (no mmap writes; RocksDB and nanogrid do not
 * write through mmap).
 *
 * Journal records: 'W' dev ino off old_size len <len bytes of old data>  |  'S' dev ino
 * (all integers u64, native byte order).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#define MAX_FD 65536

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned char tracked[MAX_FD];
static char dir[PATH_MAX];
static size_t dir_len;
static int journal = -1;
static int ready;

static ssize_t (*real_write)(int, const void *, size_t);
static ssize_t (*real_pwrite)(int, const void *, size_t, off_t);
static ssize_t (*real_writev)(int, const struct iovec *, int);
static ssize_t (*real_pwritev)(int, const struct iovec *, int, off_t);
static int (*real_fsync)(int);
static int (*real_fdatasync)(int);
static int (*real_ftruncate)(int, off_t);
static int (*real_fallocate)(int, int, off_t, off_t);
static int (*real_close)(int);
static int (*real_dup)(int);
static int (*real_dup2)(int, int);
static int (*real_dup3)(int, int, int);
static int (*real_open)(const char *, int, ...);
static int (*real_openat)(int, const char *, int, ...);

static void init(void) {
    if (ready) return;
    real_write = dlsym(RTLD_NEXT, "write");
    real_pwrite = dlsym(RTLD_NEXT, "pwrite64");
    real_writev = dlsym(RTLD_NEXT, "writev");
    real_pwritev = dlsym(RTLD_NEXT, "pwritev64");
    real_fsync = dlsym(RTLD_NEXT, "fsync");
    real_fdatasync = dlsym(RTLD_NEXT, "fdatasync");
    real_ftruncate = dlsym(RTLD_NEXT, "ftruncate64");
    real_fallocate = dlsym(RTLD_NEXT, "fallocate64");
    real_close = dlsym(RTLD_NEXT, "close");
    real_dup = dlsym(RTLD_NEXT, "dup");
    real_dup2 = dlsym(RTLD_NEXT, "dup2");
    real_dup3 = dlsym(RTLD_NEXT, "dup3");
    real_open = dlsym(RTLD_NEXT, "open64");
    real_openat = dlsym(RTLD_NEXT, "openat64");
    const char *d = getenv("LOSSY_DIR");
    const char *j = getenv("LOSSY_JOURNAL");
    if (d && j) {
        strncpy(dir, d, sizeof dir - 1);
        dir_len = strlen(dir);
        journal = real_open(j, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    }
    ready = 1;
}

static void put(const void *p, size_t n) {
    const char *c = p;
    while (n > 0) {
        ssize_t w = real_write(journal, c, n);
        if (w <= 0) abort(); /* a journal that cannot be written makes the test meaningless */
        c += w;
        n -= (size_t)w;
    }
}

static void track(int fd) {
    if (journal < 0 || fd < 0 || fd >= MAX_FD) return;
    char link[64], path[PATH_MAX];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n <= 0) return;
    path[n] = 0;
    struct stat st;
    tracked[fd] = strncmp(path, dir, dir_len) == 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
}

/* Journal the old contents of [off, off+len) and the old size, before a write there. */
static void before_write(int fd, int64_t off, uint64_t len) {
    struct stat st;
    if (fstat(fd, &st) != 0) abort();
    if (off < 0) off = (fcntl(fd, F_GETFL) & O_APPEND) ? st.st_size : lseek(fd, 0, SEEK_CUR);
    uint64_t old = 0;
    if ((uint64_t)off < (uint64_t)st.st_size) {
        uint64_t end = (uint64_t)off + len;
        old = (end < (uint64_t)st.st_size ? end : (uint64_t)st.st_size) - (uint64_t)off;
    }
    uint64_t head[6];
    char tag = 'W';
    head[0] = st.st_dev; head[1] = st.st_ino; head[2] = (uint64_t)off; head[3] = st.st_size; head[4] = old;
    put(&tag, 1);
    put(head, 5 * sizeof(uint64_t));
    char buf[65536];
    uint64_t done = 0;
    while (done < old) {
        size_t want = old - done < sizeof buf ? old - done : sizeof buf;
        ssize_t r = pread(fd, buf, want, off + (off_t)done);
        if (r <= 0) abort();
        put(buf, (size_t)r);
        done += (uint64_t)r;
    }
}

static void synced(int fd) {
    struct stat st;
    if (fstat(fd, &st) != 0) return;
    uint64_t head[2] = {st.st_dev, st.st_ino};
    char tag = 'S';
    put(&tag, 1);
    put(head, sizeof head);
}

static int is_tracked(int fd) { return ready && journal >= 0 && fd >= 0 && fd < MAX_FD && tracked[fd]; }

static uint64_t iov_len(const struct iovec *iov, int n) {
    uint64_t t = 0;
    for (int i = 0; i < n; i++) t += iov[i].iov_len;
    return t;
}

/* Opening an existing file with O_TRUNC throws its contents away: journal them first. */
static void before_trunc(int dirfd, const char *path, int flags) {
    if (!(flags & O_TRUNC) || journal < 0) return;
    int fd = real_openat(dirfd, path, O_RDONLY | O_CLOEXEC, 0);
    if (fd < 0) return;
    track(fd);
    if (tracked[fd]) {
        struct stat st;
        if (fstat(fd, &st) == 0) before_write(fd, 0, (uint64_t)st.st_size);
    }
    tracked[fd] = 0;
    real_close(fd);
}

int open(const char *path, int flags, ...) {
    init();
    mode_t mode = 0;
    if (flags & (O_CREAT | O_TMPFILE)) { va_list a; va_start(a, flags); mode = va_arg(a, mode_t); va_end(a); }
    pthread_mutex_lock(&lock); before_trunc(AT_FDCWD, path, flags); pthread_mutex_unlock(&lock);
    int fd = real_open(path, flags, mode);
    pthread_mutex_lock(&lock); track(fd); pthread_mutex_unlock(&lock);
    return fd;
}
int open64(const char *path, int flags, ...) __attribute__((alias("open")));

int openat(int dirfd, const char *path, int flags, ...) {
    init();
    mode_t mode = 0;
    if (flags & (O_CREAT | O_TMPFILE)) { va_list a; va_start(a, flags); mode = va_arg(a, mode_t); va_end(a); }
    pthread_mutex_lock(&lock); before_trunc(dirfd, path, flags); pthread_mutex_unlock(&lock);
    int fd = real_openat(dirfd, path, flags, mode);
    pthread_mutex_lock(&lock); track(fd); pthread_mutex_unlock(&lock);
    return fd;
}
int openat64(int dirfd, const char *path, int flags, ...) __attribute__((alias("openat")));

int creat(const char *path, mode_t mode) { return open(path, O_CREAT | O_WRONLY | O_TRUNC, mode); }
int creat64(const char *path, mode_t mode) __attribute__((alias("creat")));

int close(int fd) {
    init();
    if (fd >= 0 && fd < MAX_FD) tracked[fd] = 0;
    return real_close(fd);
}

/* A duplicated descriptor writes to the same file (shells redirect with dup2). */
static int copied(int from, int to) {
    if (to >= 0 && to < MAX_FD) tracked[to] = from >= 0 && from < MAX_FD && tracked[from];
    return to;
}
int dup(int fd) { init(); return copied(fd, real_dup(fd)); }
int dup2(int fd, int to) { init(); return copied(fd, real_dup2(fd, to)); }
int dup3(int fd, int to, int flags) { init(); return copied(fd, real_dup3(fd, to, flags)); }

ssize_t write(int fd, const void *buf, size_t n) {
    init();
    if (!is_tracked(fd)) return real_write(fd, buf, n);
    pthread_mutex_lock(&lock);
    before_write(fd, -1, n);
    ssize_t r = real_write(fd, buf, n);
    pthread_mutex_unlock(&lock);
    return r;
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off) {
    init();
    if (!is_tracked(fd)) return real_pwrite(fd, buf, n, off);
    pthread_mutex_lock(&lock);
    before_write(fd, off, n);
    ssize_t r = real_pwrite(fd, buf, n, off);
    pthread_mutex_unlock(&lock);
    return r;
}
ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off) __attribute__((alias("pwrite")));

ssize_t writev(int fd, const struct iovec *iov, int cnt) {
    init();
    if (!is_tracked(fd)) return real_writev(fd, iov, cnt);
    pthread_mutex_lock(&lock);
    before_write(fd, -1, iov_len(iov, cnt));
    ssize_t r = real_writev(fd, iov, cnt);
    pthread_mutex_unlock(&lock);
    return r;
}

ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t off) {
    init();
    if (!is_tracked(fd)) return real_pwritev(fd, iov, cnt, off);
    pthread_mutex_lock(&lock);
    before_write(fd, off, iov_len(iov, cnt));
    ssize_t r = real_pwritev(fd, iov, cnt, off);
    pthread_mutex_unlock(&lock);
    return r;
}
ssize_t pwritev64(int fd, const struct iovec *iov, int cnt, off_t off) __attribute__((alias("pwritev")));

int ftruncate(int fd, off_t len) {
    init();
    if (!is_tracked(fd)) return real_ftruncate(fd, len);
    pthread_mutex_lock(&lock);
    struct stat st;
    if (fstat(fd, &st) == 0 && len < st.st_size) before_write(fd, len, (uint64_t)(st.st_size - len));
    else before_write(fd, st.st_size, 0);
    int r = real_ftruncate(fd, len);
    pthread_mutex_unlock(&lock);
    return r;
}
int ftruncate64(int fd, off_t len) __attribute__((alias("ftruncate")));

int fallocate(int fd, int mode, off_t off, off_t len) {
    init();
    if (!is_tracked(fd)) return real_fallocate(fd, mode, off, len);
    pthread_mutex_lock(&lock);
    struct stat st;
    if (fstat(fd, &st) == 0) before_write(fd, st.st_size, 0); /* records the size only */
    int r = real_fallocate(fd, mode, off, len);
    pthread_mutex_unlock(&lock);
    return r;
}
int fallocate64(int fd, int mode, off_t off, off_t len) __attribute__((alias("fallocate")));

int fsync(int fd) {
    init();
    int r = real_fsync(fd);
    if (r == 0 && is_tracked(fd)) { pthread_mutex_lock(&lock); synced(fd); pthread_mutex_unlock(&lock); }
    return r;
}

int fdatasync(int fd) {
    init();
    int r = real_fdatasync(fd);
    if (r == 0 && is_tracked(fd)) { pthread_mutex_lock(&lock); synced(fd); pthread_mutex_unlock(&lock); }
    return r;
}
