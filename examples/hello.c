/*
 * hello.c: square eight numbers on a pool of worker processes.
 *
 *   cc hello.c $(pkg-config --cflags --libs multicore) -o hello && ./hello
 */
#include <multicore.h>
#include <stdio.h>
#include <string.h>

/* The task. It runs in a worker process; its argument and its result are
   bytes in shared memory (here, one long long each way). */
static int square(const void *arg, size_t len, mc_task_ctx *ctx)
{
    long long x;

    if (len != sizeof x)
        return 1;                       /* the caller sees MC_ETASK, code 1 */
    memcpy(&x, arg, sizeof x);
    x *= x;
    return mc_result_set(ctx, &x, sizeof x) == MC_OK ? 0 : 2;
}

int main(void)
{
    mc_pool *pool = NULL;
    mc_group *group = NULL;
    const char *what;
    int err, stop_err;

    what = "mc_pool_start";             /* NULL options: one worker per CPU */
    if ((err = mc_pool_start(&pool, NULL)) != MC_OK)
        goto out;

    what = "mc_group_create";
    if ((err = mc_group_create(pool, &group)) != MC_OK)
        goto out;

    what = "mc_submit";                 /* the argument is copied into the pool */
    for (long long n = 1; n <= 8; n++)
        if ((err = mc_submit(group, square, &n, sizeof n, -1.0)) != MC_OK)
            goto out;

    what = "mc_group_wait";             /* up to 10 seconds for all eight */
    if ((err = mc_group_wait(group, 10.0)) != MC_OK)
        goto out;

    for (size_t i = 0; i < mc_group_size(group); i++) {
        mc_result r;
        long long square_of_n;

        what = "mc_group_result";       /* results come in submission order */
        if ((err = mc_group_result(group, i, &r)) != MC_OK)
            goto out;
        what = "task";
        if ((err = r.status) != MC_OK)
            goto out;
        if (r.len != sizeof square_of_n) {
            err = MC_EINVAL;
            goto out;
        }
        memcpy(&square_of_n, r.data, sizeof square_of_n);
        printf("%zu squared is %lld\n", i + 1, square_of_n);
    }

out:
    if (group != NULL)
        mc_group_destroy(group);
    if (pool != NULL && (stop_err = mc_pool_stop(pool)) != MC_OK && err == MC_OK) {
        err = stop_err;
        what = "mc_pool_stop";
    }
    if (err != MC_OK) {
        fprintf(stderr, "hello: %s: %s\n", what, mc_strerror(err));
        return 1;
    }
    return 0;
}
