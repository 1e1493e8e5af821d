/* C declarations for cffi (API mode): "..." lets the compiler fill in layouts and values. */

#define SFD_CLOEXEC ...
#define SFD_NONBLOCK ...
#define TFD_CLOEXEC ...
#define TFD_NONBLOCK ...
#define TFD_TIMER_ABSTIME ...
#define TFD_TIMER_CANCEL_ON_SET ...

#define CLOCK_REALTIME ...
#define CLOCK_MONOTONIC ...
#define CLOCK_BOOTTIME ...

typedef struct { ...; } sigset_t;
typedef long... time_t;

struct timespec {
    time_t tv_sec;
    long tv_nsec;
    ...;
};

struct itimerspec {
    struct timespec it_interval;
    struct timespec it_value;
};

struct signalfd_siginfo {
    uint32_t ssi_signo;
    int32_t  ssi_errno;
    int32_t  ssi_code;
    uint32_t ssi_pid;
    uint32_t ssi_uid;
    int32_t  ssi_fd;
    uint32_t ssi_tid;
    uint32_t ssi_band;
    uint32_t ssi_overrun;
    uint32_t ssi_trapno;
    int32_t  ssi_status;
    int32_t  ssi_int;
    uint64_t ssi_ptr;
    uint64_t ssi_utime;
    uint64_t ssi_stime;
    uint64_t ssi_addr;
    ...;
};

int sigemptyset(sigset_t *set);
int sigaddset(sigset_t *set, int signum);

int signalfd(int fd, const sigset_t *mask, int flags);

int timerfd_create(int clockid, int flags);
int timerfd_settime(int fd, int flags, const struct itimerspec *new_value,
                    struct itimerspec *old_value);
int timerfd_gettime(int fd, struct itimerspec *curr_value);

/* inotify, for `supervisor logs -f` on the output files kept where no journald runs */
#define IN_CLOEXEC ...
#define IN_NONBLOCK ...
#define IN_MODIFY ...
#define IN_CREATE ...
#define IN_MOVED_TO ...
#define IN_DELETE ...
#define IN_MOVED_FROM ...
#define IN_ATTRIB ...
#define IN_MOVE_SELF ...
#define IN_DELETE_SELF ...

int inotify_init1(int flags);
int inotify_add_watch(int fd, const char *pathname, uint32_t mask);

/* native/spawn.c: a service's spawn with clone3 (CLONE_PIDFD, CLONE_INTO_CGROUP). */
typedef int... gid_t;

struct sv_spawn {
    const char *path;
    char *const *argv;
    char *const *envp;
    const char *cwd;
    int stdin_fd;
    int stdout_fd;
    int stderr_fd;
    int cgroup_fd;
    int stopped;
    int umask;
    long long nofile;
    long long uid;
    long long gid;
    int ngroups;
    const gid_t *groups;
};

#define SV_STEP_CWD ...  /* sv_spawn_failed_step(): the working directory */

int sv_spawn_setup(void);
int sv_spawn_failed_step(void);
int sv_spawn(const struct sv_spawn *r, int *pidfd);
int sv_clone3_probe(void);
