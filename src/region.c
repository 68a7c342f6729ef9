/*
 * region.c — the one shared-memory region of a pool.
 *
 * An anonymous memfd (nothing in /dev/shm to leak or for another user to
 * open) sized far beyond what a pool will use and mapped once, before the
 * first fork, so every process sees it at the same address. memfd pages are
 * created VM_NORESERVE and committed only when first touched, so the large
 * reservation costs address space, not memory: that is how the pool has no
 * fixed size limits without ever remapping.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/sysinfo.h>
#include <unistd.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

static size_t default_region_size(void)
{
    struct sysinfo si;
    uint64_t ram = 0;
    if (sysinfo(&si) == 0)
        ram = (uint64_t)si.totalram * si.mem_unit;
    uint64_t want = ram * 2;
    if (want < ((uint64_t)1 << 30))
        want = (uint64_t)1 << 30;
    if (want > SIZE_MAX / 2)
        want = SIZE_MAX / 2;
    return (size_t)want;
}

int mc__region_create(size_t want, int *memfd, void **base, size_t *size)
{
    bool explicit_size = want != 0;
    if (!explicit_size)
        want = default_region_size();
    want = (size_t)MC_ALIGN_UP(want, (size_t)sysconf(_SC_PAGESIZE));
    if (want < MC_REGION_MIN)
        return MC_EINVAL;

    int fd = memfd_create("multicore", MFD_CLOEXEC);
    if (fd < 0)
        return MC_ESYSTEM;

    /* Halve the reservation until both the file size and the mapping are
       accepted (RLIMIT_AS or a small vm.max_map_count can refuse). */
    for (;;) {
        if (ftruncate(fd, (off_t)want) == 0) {
            void *p = mmap(NULL, want, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd, 0);
            if (p != MAP_FAILED) {
                *memfd = fd;
                *base = p;
                *size = want;
                return MC_OK;
            }
        }
        if (explicit_size || want / 2 < MC_REGION_MIN) {
            int saved = errno;
            close(fd);
            errno = saved;
            return errno == ENOMEM ? MC_ENOMEM : MC_ESYSTEM;
        }
        want /= 2;
    }
}

void mc__region_destroy(int memfd, void *base, size_t size)
{
    if (base)
        munmap(base, size);
    if (memfd >= 0)
        close(memfd);
}

int mc__region_populate(void *addr, size_t len)
{
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t lo = (uintptr_t)addr & ~(page - 1);
    uintptr_t hi = MC_ALIGN_UP((uintptr_t)addr + len, page);
    if (madvise((void *)lo, hi - lo, MADV_POPULATE_WRITE) == 0)
        return MC_OK;
    /* EINVAL: a kernel before 5.14; the pages fault in as they are used. */
    return errno == EINVAL ? MC_OK : MC_ENOMEM;
}
