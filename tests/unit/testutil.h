/*
 * testutil: what every CUnit suite of the project does the same way.
 * Header-only (each test program is one file plus the library), so the
 * suites need no extra object to link.
 */
#ifndef TAPWIRE_TESTUTIL_H
#define TAPWIRE_TESTUTIL_H

#include <CUnit/Basic.h>
#include <dirent.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* Runs the registered suites verbosely and cleans the registry up. Returns
 * the test program's exit status: 0 when every test passed. */
static inline int testutil_run(void)
{
    int failures = 1;

    CU_basic_set_mode(CU_BRM_VERBOSE);
    if (CU_basic_run_tests() == CUE_SUCCESS)
        failures = (int)CU_get_number_of_failures() + (int)CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return failures == 0 ? 0 : 1;
}

/* Removes dir and the files in it (a test's temporary directory; nothing
 * below it is a directory). */
static inline void testutil_remove_dir(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    char file[512];

    if (d == NULL)
        return;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        snprintf(file, sizeof(file), "%s/%s", dir, de->d_name);
        unlink(file);
    }
    closedir(d);
    rmdir(dir);
}

/* Whether another process finds a lock on any byte of path: POSIX locks of
 * this process are invisible to itself, so a child asks. */
static inline bool testutil_other_process_sees_a_lock(const char *path)
{
    pid_t pid = fork();
    int status = 0;

    CU_ASSERT_FATAL(pid >= 0);
    if (pid == 0) {
        struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0};
        int fd = open(path, O_RDWR);

        if (fd < 0 || fcntl(fd, F_GETLK, &fl) != 0)
            _exit(2);
        _exit(fl.l_type == F_UNLCK ? 0 : 1);
    }
    CU_ASSERT_FATAL(waitpid(pid, &status, 0) == pid);
    CU_ASSERT_FATAL(WIFEXITED(status) && WEXITSTATUS(status) != 2);
    return WEXITSTATUS(status) == 1;
}

#endif
