/* A toy for tests/test_spawn.py: what a freshly exec'd program finds, its cgroup read with
 * its first instructions (before any library could have moved it). Prints one line each:
 * cgroup <0:: line>, sigblk <hex>, sigign <hex>, fds <list>, nofile <soft>, sid <sid==pid>,
 * cwd <dir>, ids <uid> <gid> <groups...>. */
#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

int main(void)
{
    char buf[4096];
    int fd = open("/proc/self/cgroup", O_RDONLY | O_CLOEXEC);
    ssize_t n = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;
    buf[n > 0 ? n : 0] = 0;
    if (fd >= 0)
        close(fd);
    char *line = strstr(buf, "0::");
    if (line)
        line[strcspn(line, "\n")] = 0;
    printf("cgroup %s\n", line ? line + 3 : "?");
    FILE *st = fopen("/proc/self/status", "r");
    while (st && fgets(buf, sizeof buf, st))
        if (!strncmp(buf, "SigBlk:", 7) || !strncmp(buf, "SigIgn:", 7))
            printf("sig%c%c%c %s", buf[3] | 32, buf[4], buf[5], buf + 8);
    if (st)
        fclose(st);
    DIR *d = opendir("/proc/self/fd");
    printf("fds");
    for (struct dirent *e; d && (e = readdir(d));)
        if (e->d_name[0] != '.' && atoi(e->d_name) != dirfd(d))
            printf(" %s", e->d_name);
    printf("\n");
    if (d)
        closedir(d);
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    printf("nofile %llu\n", (unsigned long long)rl.rlim_cur);
    printf("sid %d\n", getsid(0) == getpid());
    printf("cwd %s\n", getcwd(buf, sizeof buf) ? buf : "?");
    gid_t groups[64];
    int ng = getgroups(64, groups);
    printf("ids %d %d", (int)getuid(), (int)getgid());
    for (int i = 0; i < ng; i++)
        printf(" %d", (int)groups[i]);
    printf("\n");
    return 0;
}
