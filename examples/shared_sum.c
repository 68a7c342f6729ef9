/*
 * shared_sum.c: two workers sum the halves of one 64 MiB array, and scale
 * it in place, without a byte of it being copied.
 *
 *   cc shared_sum.c $(pkg-config --cflags --libs multicore) -o shared_sum && ./shared_sum
 *
 * The array is a shared buffer: the tasks receive a link to it (an index)
 * and work on the caller's memory itself.
 */
#include <multicore.h>
#include <stdio.h>
#include <string.h>

#define N ((size_t)8 << 20) /* doubles: 64 MiB */

struct part {
    unsigned link;       /* which linked buffer: from mc_submit_share() */
    size_t start, count; /* the half this task works on */
};

static int sum_and_scale(const void *arg, size_t len, mc_task_ctx *ctx)
{
    struct part p;
    size_t bytes;
    if (len != sizeof p)
        return 1;
    memcpy(&p, arg, sizeof p);
    double *a = (double *)mc_task_link_data(ctx, p.link, &bytes);
    if (a == NULL || bytes != N * sizeof *a || p.start + p.count > N)
        return 2;
    double sum = 0;
    for (size_t i = p.start; i < p.start + p.count; i++) {
        sum += a[i];
        a[i] *= 2;           /* the caller sees this */
    }
    return mc_result_set(ctx, &sum, sizeof sum) == MC_OK ? 0 : 3;
}

int main(void)
{
    mc_pool *pool = NULL;
    mc_group *group = NULL;
    mc_hold *buffer = NULL;
    const char *what;
    int err, stop_err;

    what = "mc_pool_start";
    if ((err = mc_pool_start(&pool, NULL)) != MC_OK)
        goto out;

    what = "mc_buffer_alloc";
    if ((err = mc_buffer_alloc(pool, N * sizeof(double), &buffer)) != MC_OK)
        goto out;
    double *a = mc_hold_data(buffer, NULL);
    for (size_t i = 0; i < N; i++)
        a[i] = 1.0;

    what = "mc_group_create";
    if ((err = mc_group_create(pool, &group)) != MC_OK)
        goto out;
    for (size_t half = 0; half < 2; half++) {
        struct part *p;
        what = "mc_submit_reserve";
        if ((err = mc_submit_reserve(group, sizeof *p, (void **)&p)) != MC_OK)
            goto out;
        what = "mc_submit_share";   /* the task now keeps the buffer alive */
        if ((err = mc_submit_share(group, buffer, &p->link)) != MC_OK) {
            mc_submit_abort(group);
            goto out;
        }
        p->start = half * (N / 2);
        p->count = N / 2;
        what = "mc_submit_commit";
        if ((err = mc_submit_commit(group, sum_and_scale, -1.0)) != MC_OK) {
            mc_submit_abort(group);
            goto out;
        }
    }

    what = "mc_group_wait";
    if ((err = mc_group_wait(group, 30.0)) != MC_OK)
        goto out;
    double total = 0;
    for (size_t i = 0; i < 2; i++) {
        mc_result r;
        double sum;
        what = "mc_group_result";
        if ((err = mc_group_result(group, i, &r)) != MC_OK)
            goto out;
        what = "task";
        if ((err = r.status) != MC_OK || r.len != sizeof sum) {
            err = err != MC_OK ? err : MC_EINVAL;
            goto out;
        }
        memcpy(&sum, r.data, sizeof sum);
        total += sum;
    }
    what = "checking the result";
    if (total != (double)N || a[0] != 2.0 || a[N - 1] != 2.0) {
        err = MC_EINVAL;
        goto out;
    }
    printf("sum of %zu ones: %.0f; every element doubled in place by the workers\n", N, total);

out:
    if (group != NULL)
        mc_group_destroy(group);
    mc_hold_release(buffer);
    if (pool != NULL && (stop_err = mc_pool_stop(pool)) != MC_OK && err == MC_OK) {
        err = stop_err;
        what = "mc_pool_stop";
    }
    if (err != MC_OK) {
        fprintf(stderr, "shared_sum: %s: %s\n", what, mc_strerror(err));
        return 1;
    }
    return 0;
}
