/* A service's spawn, in C: clone3() with CLONE_PIDFD and CLONE_INTO_CGROUP.
 *
 * The child is born in its service's cgroup (no migration: the daemon never steps into a
 * cgroup, and no write to cgroup.procs takes cgroup_threadgroup_rwsem and its RCU grace
 * period), and its pidfd comes from the same call (no window in which the pid could be
 * reused before we hold it).
 *
 * Like glibc's posix_spawn, the child shares the daemon's memory until it execs
 * (CLONE_VM | CLONE_VFORK, on a stack of its own): no page tables are copied, which for a
 * Python daemon of 25 MB costs ~0.6 ms a spawn, and an exec failure is reported back
 * through that memory. Unlike posix_spawn it shares the daemon's fd table too
 * (CLONE_FILES) and makes itself a private one of the few lowest fds only
 * (close_range(..., CLOSE_RANGE_UNSHARE)): a daemon holds a pidfd per service, and a
 * table of 10,000 fds copied and closed again per spawn cost ~1 ms (132 us with 6 fds,
 * 1,169 us with 10,000, measured here). The child's three fds wait for it in three
 * reserved low slots, set by the daemon for each spawn. clone3 has no libc wrapper that starts a function on a new stack,
 * hence the few lines of assembly (x86-64); elsewhere, and for a service created stopped
 * (whose child waits, stopped, before its exec: the daemon cannot wait for that), the
 * child is a copy-on-write clone and reports through a shared page.
 *
 * In the child, before execve: every signal back to its default disposition, setsid, the
 * three fds (stdin, stdout, stderr), chdir, umask, RLIMIT_NOFILE back to the daemon's own
 * before it raised it, groups, gid, uid, every other fd closed (close_range), an empty
 * signal mask; for "created stopped", SIGSTOP to itself just before execve.
 *
 * Declared for cffi in native/native.h; called by supervisor/process.py.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/close_range.h>
#include <linux/sched.h>

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

struct sv_spawn {
    const char *path;       /* absolute */
    char *const *argv;      /* NULL-terminated */
    char *const *envp;      /* NULL-terminated */
    const char *cwd;        /* NULL: the daemon's */
    int stdin_fd;           /* -1: /dev/null */
    int stdout_fd;
    int stderr_fd;
    int cgroup_fd;          /* -1: no cgroup (born in the daemon's own) */
    int stopped;            /* stop itself (SIGSTOP) just before execve */
    int umask;              /* -1: the daemon's */
    long long nofile;       /* soft RLIMIT_NOFILE of the child; -1: the daemon's */
    long long uid;          /* -1: the daemon's */
    long long gid;          /* -1: the daemon's */
    int ngroups;            /* -1: the daemon's supplementary groups */
    const gid_t *groups;
};

#define STACK_SIZE (64 * 1024)

static char *child_stack;       /* one at a time: the daemon is blocked while it is used */
#define SV_STEP_CWD 1  /* the step a spawn failed at: its working directory */

/* a shared page: [0] the child's errno when it cannot exec, [1] the step that failed */
static volatile int *child_err;
static int slot[3] = {-1, -1, -1};  /* low fds: the child's stdin, stdout, stderr to be */
static int devnull = -1;
static int slots_top = -1;      /* the highest of them: the child keeps fds up to it */

/* Reserve the slots (early, while the fd table is small: they are the lowest free fds). */
int sv_spawn_setup(void)
{
    if (devnull >= 0)
        return 0;
    int null = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null < 0)
        return -1;
    for (int i = 0; i < 3; i++) {
        slot[i] = fcntl(null, F_DUPFD_CLOEXEC, 3);
        if (slot[i] < 0) {
            for (int j = 0; j < i; j++)
                close(slot[j]);
            close(null);
            return -1;
        }
        if (slot[i] > slots_top)
            slots_top = slot[i];
    }
    devnull = null;
    return 0;
}

static int setup(void)
{
    if (sv_spawn_setup() < 0)
        return -1;
    if (child_err == NULL) {
        void *page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                          -1, 0);
        if (page == MAP_FAILED)
            return -1;
        child_err = page;
    }
    if (child_stack == NULL) {
        void *stack = mmap(NULL, STACK_SIZE, PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
        if (stack == MAP_FAILED)
            return -1;
        child_stack = stack;
    }
    return 0;
}

/* The child's 0, 1, 2 from the slots (the daemon put its three fds there), in its own
 * fd table. */
static int place_fds(void)
{
    for (int i = 0; i < 3; i++)
        if (dup2(slot[i], i) < 0)
            return -1;
    return 0;
}

/* "supervisor: cannot execute PATH: why" on the child's stderr, with nothing but write */
static void tell_exec_error(const char *path, int err)
{
    const char *why = strerrordesc_np(err);
    const char *parts[] = {"supervisor: cannot execute ", path, ": ",
                           why != NULL ? why : "error", "\n"};
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++)
        if (write(2, parts[i], strlen(parts[i])) < 0)
            break;
    errno = err;
}

static int child_main(void *arg)
{
    const struct sv_spawn *r = arg;
    /* the kernel's own call: glibc's sigaction() refuses its two internal signals (32, 33),
     * which a daemon started by posix_spawn may have inherited ignored; an ignored signal
     * survives exec */
    struct { void *handler; unsigned long flags; void *restorer; uint64_t mask; } dfl;
    memset(&dfl, 0, sizeof dfl);  /* SIG_DFL, no flags, empty mask */
    for (int sig = 1; sig < _NSIG; sig++)
        if (sig != SIGKILL && sig != SIGSTOP)
            syscall(SYS_rt_sigaction, sig, &dfl, NULL, (size_t)8);
    /* first of all, a table of our own (the daemon's is shared until now): of its fds, only
     * those up to the slots are copied */
    if (close_range((unsigned)slots_top + 1, UINT_MAX, CLOSE_RANGE_UNSHARE) < 0)
        goto fail;
    if (setsid() < 0 || place_fds() < 0)
        goto fail;
    if (r->umask >= 0)
        umask((mode_t)r->umask);
    if (r->nofile >= 0) {
        struct rlimit rl;
        if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
            goto fail;
        rl.rlim_cur = (rlim_t)r->nofile < rl.rlim_max ? (rlim_t)r->nofile : rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
            goto fail;
    }
    /* raw system calls: glibc's setgid/setuid would signal the daemon's other threads */
    if (r->ngroups >= 0 && syscall(SYS_setgroups, (size_t)r->ngroups, r->groups) < 0)
        goto fail;
    if (r->gid >= 0 && syscall(SYS_setresgid, (gid_t)r->gid, (gid_t)r->gid,
                               (gid_t)r->gid) < 0)
        goto fail;
    if (r->uid >= 0 && syscall(SYS_setresuid, (uid_t)r->uid, (uid_t)r->uid,
                               (uid_t)r->uid) < 0)
        goto fail;
    /* as the service's user, as systemd's WorkingDirectory=: one it may not enter fails */
    if (r->cwd != NULL && chdir(r->cwd) < 0) {
        child_err[1] = SV_STEP_CWD;
        goto fail;
    }
    if (close_range(3, UINT_MAX, 0) < 0)
        goto fail;
    if (r->stopped)
        kill(getpid(), SIGSTOP);  /* a pid, and none of the program's code run */
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    execve(r->path, r->argv, r->envp);
    if (r->stopped)  /* on resume: no one waits for the report any more; say why where the
                      * service's output goes (the journal, its file) */
        tell_exec_error(r->path, errno);
fail:
    child_err[0] = errno ? errno : EINVAL;
    _exit(127);
}

#if defined(__x86_64__)
/* clone3 with the child on `args->stack`, running fn(arg); returns in the parent only. */
static long clone3_on_stack(struct clone_args *args, size_t size, int (*fn)(void *),
                            void *arg)
{
    long ret;
    register void *fn_reg __asm__("r8") = (void *)fn;
    register void *arg_reg __asm__("r9") = arg;
    __asm__ volatile(
        "syscall\n\t"
        "testq %%rax, %%rax\n\t"
        "jnz 1f\n\t"
        /* the child: its own stack, 16-byte aligned at the top; r8, r9 survive syscall */
        "xorl %%ebp, %%ebp\n\t"
        "movq %%r9, %%rdi\n\t"
        "callq *%%r8\n\t"
        "movl %%eax, %%edi\n\t"
        "movl $231, %%eax\n\t" /* exit_group: fn never returns, but never fall through */
        "syscall\n\t"
        "hlt\n\t"
        "1:\n\t"
        : "=a"(ret)
        : "0"((long)SYS_clone3), "D"(args), "S"(size), "r"(fn_reg), "r"(arg_reg)
        : "rcx", "r11", "memory");
    return ret;
}
#define HAVE_CLONE3_ON_STACK 1
#else
#define HAVE_CLONE3_ON_STACK 0
#endif

/* Start the service described by `r`. Returns the child's pid with its pidfd in *pidfd,
 * once it has exec'd (or, created stopped, once it has stopped itself); -1 with errno set
 * when it could not be started (the child, if any, reaped). */
int sv_spawn(const struct sv_spawn *r, int *pidfd)
{
    if (setup() < 0)
        return -1;
    child_err[0] = child_err[1] = 0;
    /* the child's three fds into the slots; put back to /dev/null after (a pipe must not be
     * held open by the daemon) */
    int src[3] = {r->stdin_fd >= 0 ? r->stdin_fd : devnull, r->stdout_fd, r->stderr_fd};
    for (int i = 0; i < 3; i++)
        if (dup3(src[i], slot[i], O_CLOEXEC) < 0) {
            int saved = errno;
            for (int j = 0; j < i; j++)
                dup3(devnull, slot[j], O_CLOEXEC);
            errno = saved;
            return -1;
        }
    int fd = -1;
    struct clone_args args;
    memset(&args, 0, sizeof args);
    args.flags = CLONE_PIDFD | CLONE_FILES;
    args.pidfd = (uint64_t)(uintptr_t)&fd;
    args.exit_signal = SIGCHLD;
    if (r->cgroup_fd >= 0) {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = (uint64_t)r->cgroup_fd;
    }
    /* no signal handler of the daemon's may run in the child before its dispositions are
     * reset: every signal blocked around the clone (the child clears its mask) */
    sigset_t all, old;
    sigfillset(&all);
    sigprocmask(SIG_SETMASK, &all, &old);
    long pid;
    if (HAVE_CLONE3_ON_STACK && !r->stopped) {
        args.flags |= CLONE_VM | CLONE_VFORK;
        args.stack = (uint64_t)(uintptr_t)child_stack;
        args.stack_size = STACK_SIZE;
#if HAVE_CLONE3_ON_STACK
        pid = clone3_on_stack(&args, sizeof args, child_main, (void *)r);
#endif
        if (pid < 0) {
            errno = (int)-pid;
            pid = -1;
        }
    } else {
        pid = syscall(SYS_clone3, &args, sizeof args);
        if (pid == 0)
            child_main((void *)r);  /* never returns */
    }
    int saved = errno;
    sigprocmask(SIG_SETMASK, &old, NULL);
    siginfo_t info;
    /* a child created stopped shares our fd table until its first steps: wait (as the
     * vfork does for the other) until it has stopped (or failed); the report stays for
     * the SIGCHLD drain */
    if (pid > 0 && r->stopped)
        while (waitid(P_PIDFD, fd, &info, WSTOPPED | WEXITED | WNOWAIT) < 0 && errno == EINTR)
            ;
    for (int i = 0; i < 3; i++)  /* the child has its own copies by now */
        dup3(devnull, slot[i], O_CLOEXEC);
    if (pid < 0) {
        errno = saved;
        return -1;
    }
    int err = *child_err;
    if (err != 0) {
        while (waitid(P_PIDFD, fd, &info, WEXITED) < 0 && errno == EINTR)
            ;
        close(fd);
        errno = err;
        return -1;
    }
    *pidfd = fd;
    return (int)pid;
}

/* The step the last spawn that failed failed at: SV_STEP_CWD (its working directory), or
 * 0 (another: the exec, mostly). */
int sv_spawn_failed_step(void)
{
    return child_err != NULL ? child_err[1] : 0;
}

/* 0 when clone3 takes CLONE_PIDFD | CLONE_INTO_CGROUP here, else why not (an errno). No
 * process is made: the cgroup fd given is invalid, which the kernel finds only after it
 * has accepted the arguments (EBADF), where an older one rejects them (ENOSYS, E2BIG,
 * EINVAL). */
int sv_clone3_probe(void)
{
    int fd = -1;
    struct clone_args args;
    memset(&args, 0, sizeof args);
    args.flags = CLONE_PIDFD | CLONE_INTO_CGROUP;
    args.pidfd = (uint64_t)(uintptr_t)&fd;
    args.exit_signal = SIGCHLD;
    args.cgroup = INT_MAX;  /* no such fd */
    long ret = syscall(SYS_clone3, &args, sizeof args);
    if (ret == 0)
        _exit(0);  /* cannot happen; never run the caller's code twice */
    if (ret > 0) {
        siginfo_t info;
        waitid(P_PIDFD, fd, &info, WEXITED);
        close(fd);
        return 0;
    }
    return errno == EBADF ? 0 : errno;
}
