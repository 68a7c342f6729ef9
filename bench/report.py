"""Turn the results dict into tables (text and Markdown), targets, a PNG.

Every ratio is "how many times better multicore is than that library" on
that figure (>1: multicore wins; time-like figures are inverted so that
bigger is always better for multicore).
"""

import math
import statistics

LIB_ORDER = ["multicore", "mp_pool", "futures", "joblib", "mpire", "ray", "inprocess"]
LABELS = {"multicore": "multicore", "mp_pool": "mp.Pool", "futures": "futures",
          "joblib": "joblib/loky", "mpire": "mpire", "ray": "Ray",
          "inprocess": "in-process (ref.)"}
PEERS = ["mp_pool", "futures", "joblib", "mpire", "ray"]


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

def _fmt(x, unit=""):
    if x is None:
        return "-"
    if isinstance(x, str):
        return x
    if x == 0:
        return "0" + unit
    ax = abs(x)
    if ax >= 1000:
        s = f"{x:,.0f}"
    elif ax >= 100:
        s = f"{x:.0f}"
    elif ax >= 10:
        s = f"{x:.1f}"
    elif ax >= 1:
        s = f"{x:.2f}"
    else:
        s = f"{x:.3g}"
    return s + unit


def _ratio(r):
    if r is None or not math.isfinite(r):
        return "-"
    return f"{r:.1f}x" if r >= 10 else f"{r:.2f}x"


def _div(a, b):
    try:
        if a is None or b is None or b == 0:
            return None
        return a / b
    except TypeError:
        return None


def _res(data, scen, lib):
    """The result dict of one library in one scenario, or None."""
    r = data["scenarios"].get(scen, {}).get("results", {}).get(lib)
    if not r or "error" in r:
        return None
    return r


def _status(data, scen, lib):
    """None when there is a result, else the text for the table row."""
    peer = data["peers"].get(lib, {})
    if lib != "inprocess" and not peer.get("available", False):
        return "missing: " + (peer.get("error") or "not importable")
    r = data["scenarios"].get(scen, {}).get("results", {}).get(lib)
    if r is None:
        return "not run"
    if "error" in r:
        return "error: " + r["error"][:120]
    return None


def _libs(data, scen):
    present = data["scenarios"].get(scen, {}).get("libs", [])
    return [l for l in LIB_ORDER if l in present]


# ---------------------------------------------------------------------------
# tables: (title, headers, rows)
# ---------------------------------------------------------------------------

def tables(data):
    out = []
    sc = data["scenarios"]
    mc = lambda s: _res(data, s, "multicore")  # noqa: E731

    def rows_for(scen, ncols, make):
        """One row per library; the last column is the share of the machine
        other processes used while that library was measured."""
        rows = []
        for lib in _libs(data, scen):
            st = _status(data, scen, lib)
            if st:
                rows.append([LABELS[lib], st] + [""] * (ncols - 2) + [""])
            else:
                r = _res(data, scen, lib)
                itf = r.get("interference_percent")
                rows.append([LABELS[lib]] + make(lib, r) + ["-" if itf is None else f"{itf:.0f}"])
        return rows

    if "a" in sc:
        m = mc("a")
        out.append((f"(a) {sc['a']['title']} (warm pool, {m['n'] if m else '?'} samples)",
                    ["library", "p50 us", "p99 us", "mean us", "mc x (p50)", "mc x (p99)", "others %"],
                    rows_for("a", 6, lambda lib, r: [
                        _fmt(r["p50_us"]), _fmt(r["p99_us"]), _fmt(r["mean_us"]),
                        _ratio(_div(r["p50_us"], m and m["p50_us"])),
                        _ratio(_div(r["p99_us"], m and m["p99_us"]))])))
    if "b" in sc:
        m = mc("b")
        out.append((f"(b) {sc['b']['title']} ({m['tasks'] if m else '?'} tasks, best of reps)",
                    ["library", "tasks/s", "seconds", "mc x", "others %"],
                    rows_for("b", 4, lambda lib, r: [
                        _fmt(r["tasks_per_s"]), _fmt(r["best_s"]),
                        _ratio(_div(m and m["tasks_per_s"], r["tasks_per_s"]))])))
    if "c" in sc:
        m = mc("c")
        out.append((f"(c) {sc['c']['title']} (best chunk size of those tried)",
                    ["library", "tasks/s", "best chunk", "mc x", "method", "others %"],
                    rows_for("c", 5, lambda lib, r: [
                        _fmt(r["tasks_per_s"]), r["best_chunk"],
                        _ratio(_div(m and m["tasks_per_s"], r["tasks_per_s"])), r["method"]])))
    if "d" in sc:
        m = mc("d")
        title = f"(d) {sc['d']['title']}"
        if m:
            title += (f" ({m['tasks']} tasks of {m['task_ms']:.0f} ms; speedup vs sequential in-process,"
                      f" median of alternating pairs)")
        out.append((title, ["library", "speedup (median)", "best-of", "parallel s (median)",
                            "sequential s (median)", "mc x", "others %"],
                    rows_for("d", 6, lambda lib, r: [
                        _fmt(r["speedup"]), _fmt(r.get("speedup_best_of")),
                        _fmt(statistics.median(r["parallel_s"])),
                        _fmt(statistics.median(r["sequential_s"])),
                        _ratio(_div(m and m["speedup"], r["speedup"]))])))
    if "e" in sc:
        m = mc("e")
        sizes = sorted({int(k) for lib in _libs(data, "e")
                        for k in (_res(data, "e", lib) or {}) if k.isdigit()})
        for way in ("send", "return"):
            key = f"{way}_gb_s"

            def cells(lib, r, key=key):
                c = []
                for s in sizes:
                    v = (r.get(str(s)) or {}).get(key)
                    mv = ((m or {}).get(str(s)) or {}).get(key)
                    c.append(f"{_fmt(v)} ({_ratio(_div(mv, v))})" if v else "-")
                return c
            what = ("sent to a worker, which returns the sum" if way == "send"
                    else "created and returned by a worker")
            rows = rows_for("e", 1 + len(sizes), cells)
            copy_key = f"{way}_copy_gb_s"
            if m and any(copy_key in (m.get(str(s)) or {}) for s in sizes):
                # multicore with plain numpy arrays (one copy each way)
                copied = []
                for s in sizes:
                    v = (m.get(str(s)) or {}).get(copy_key)
                    mv = (m.get(str(s)) or {}).get(key)
                    copied.append(f"{_fmt(v)} ({_ratio(_div(mv, v))})" if v else "-")
                rows.insert(1, ["multicore, plain numpy (sent: copied; returned: moved)"] + copied + [""])
            out.append((f"(e) numpy arrays {what}: GB/s (mc x); multicore's arrays "
                        f"in shared memory (multicore.shared)",
                        ["library"] + [f"{s} MiB" for s in sizes] + ["others %"], rows))
        ref = _res(data, "e", "inprocess") or {}
        if m and any("send_floor_gb_s" in (ref.get(str(s)) or {}) for s in sizes):
            rows = []
            for s in sizes:
                mr, fr = m.get(str(s)) or {}, ref.get(str(s)) or {}
                row = [f"{s} MiB"]
                for way in ("send", "return"):
                    v, f = mr.get(f"{way}_copy_gb_s"), fr.get(f"{way}_floor_gb_s")
                    fw = fr.get(f"{way}_warm_floor_gb_s")
                    row += [_fmt(v), _fmt(f), _ratio(_div(f, v)), _fmt(fw), _ratio(_div(fw, v))]
                fb = fr.get("return_build_floor_gb_s")
                row += [_fmt(fb), _ratio(_div(fb, mr.get("return_copy_gb_s")))]
                rows.append(row)
            out.append(("(e) plain numpy arrays against the in-process copy floors (issue 12 §1): "
                        "GB/s; time / floor (target <= 1.25x of the fresh-memory floor); "
                        "the warm floor copies into shared memory already faulted in; the "
                        "build floor writes the array in place there (no copy: a worker's "
                        "array is moved to the caller)",
                        ["size", "mc send", "floor: copy to fresh shm + sum", "send / floor",
                         "warm floor", "send / warm", "mc return", "floor: build + copy out",
                         "return / floor", "warm floor", "return / warm", "build floor",
                         "return / build"], rows))
    if "f" in sc:
        m = mc("f")
        f = sc["f"]
        how = (f"median of {f.get('repetitions', '?')}"
               + (", the libraries interleaved round by round" if f.get("interleaved") else ""))
        out.append((f"(f) start-up to first result and shutdown, fresh process each time ({how})",
                    ["library", "import ms", "start->result ms", "shutdown ms", "mc x (start)", "mc x (stop)", "others %"],
                    rows_for("f", 6, lambda lib, r: [
                        _fmt(1e3 * r["import_s"]), _fmt(1e3 * r["start_to_first_result_s"]),
                        _fmt(1e3 * r["shutdown_s"]),
                        _ratio(_div(r["start_to_first_result_s"], m and m["start_to_first_result_s"])),
                        _ratio(_div(r["shutdown_s"], m and m["shutdown_s"]))])))
    if "g" in sc:
        out.append((f"(g) {sc['g']['title']} (caller + every descendant; utime+stime in clock "
                    f"ticks, and schedstat run time in ms)",
                    ["library", "ticks", "CPU ms (ticks)", "CPU ms (schedstat)", "window s",
                     "processes", "busiest (schedstat)", "others %"],
                    rows_for("g", 7, lambda lib, r: [
                        str(r["ticks"]), _fmt(r["cpu_ms"]), _fmt(r.get("schedstat_ms")),
                        _fmt(r["seconds"]), str(r["processes"]),
                        ", ".join(f"{b['comm']} {b['ms']:.2g}ms" for b in r["busiest"][:3]) or "-"])))
    if "h" in sc and "rows" in sc["h"]:
        h = sc["h"]
        floors = {(r["name"], r["mode"]): r for r in h["rows"] if r["name"].endswith("floor")}
        rows = []
        for r in h["rows"]:
            sp = floors.get(("spin_floor", r["mode"]))
            fx = floors.get(("futex_floor", r["mode"]))
            rows.append([r["name"], r["mode"], str(r["workers"]),
                         _fmt(r["p50_ns"] / 1e3), _fmt(r["p99_ns"] / 1e3),
                         _ratio(_div(r["p50_ns"], sp and sp["p50_ns"])),
                         _ratio(_div(r["p50_ns"], fx and fx["p50_ns"]))])
        out.append((f"(h) C API round trip of an empty task vs two-process floors "
                    f"(after sleep: {h['sleep_us'] / 1000:g} ms pause before each)",
                    ["what", "mode", "workers", "p50 us", "p99 us", "p50 / spin", "p50 / futex"],
                    rows))
        hp = h.get("pairs")
        if hp:
            def floors(x):   # runs from before the floors around each round had one
                if "spin_before_ns" not in x:
                    return _fmt(x["spin_ns"] / 1e3), ""
                return (f"{_fmt(x['spin_before_ns'] / 1e3)}, {_fmt(x['spin_after_ns'] / 1e3)}",
                        "yes" if x["steady"] else "no")
            prow = [[str(i + 1), *floors(x), _fmt(x["hot_ns"] / 1e3),
                     _ratio(x["hot_ratio"]), _fmt(x["futex_sleep_ns"] / 1e3),
                     _fmt(x["sleep_ns"] / 1e3), _ratio(x["sleep_ratio"])]
                    for i, x in enumerate(hp["rounds"])]
            prow.append(["median", "", "", "", _ratio(hp["hot_ratio"]), "", "", _ratio(hp["sleep_ratio"])])
            out.append((f"(h) the floors, multicore (1 worker, reused group) and the floors again, "
                        f"in rounds ({hp['hot_iterations']:,} hot, {hp['sleep_iterations']} after "
                        f"sleep each); ratios against the mean of a round's floors, the median over "
                        f"its steady rounds (spin floors within {hp.get('steady_factor', 0):g}x); p50 us",
                        ["round", "spin floors before, after", "steady", "mc hot", "mc / spin",
                         "futex floor (slept, mean)", "mc slept", "mc / futex"], prow))
    if "j" in sc:
        j = sc["j"]
        py = j.get("python") or {}
        if "error" not in py and py:
            out.append((f"(j) {j['title']}: {py['tasks']:,} tasks inc(i) in one Task, every result "
                        f"waiting (Python)",
                        ["shm B/task", "args B", "result B", "beyond payload B", "target B",
                         "caller B/queued part", "caller B/result", "others %"],
                        [[_fmt(py["shm_bytes_per_task"]), _fmt(py["arg_bytes_per_task"]),
                          _fmt(py["result_bytes_per_task"]), _fmt(py["shm_overhead_per_task"]),
                          "128", _fmt(py["caller_bytes_per_queued"]),
                          _fmt(py["caller_bytes_per_result"]),
                          _fmt(j.get("interference_percent"))]]))
        c = j.get("c") or {}
        if c.get("rows"):
            out.append((f"(j) engine bytes per task beyond payload (C, {c['tasks']:,} tasks each)",
                        ["arg B", "result B", "queued B/task", "queued beyond arg",
                         "done B/task", "done beyond payload"],
                        [[str(r["arg_len"]), str(r["result_len"]), _fmt(r["queued_bytes"]),
                          _fmt(r["queued_overhead"]), _fmt(r["done_bytes"]), _fmt(r["done_overhead"])]
                         for r in c["rows"]]))
    if "k" in sc:
        k = sc["k"]
        py = k.get("python") or {}
        if py.get("rows"):
            out.append((f"(k) {k['title']}, Python (numpy imported; median of {py['reps']})",
                        ["workers", "ready ms", "first result ms", "fork floor ms", "ready / floor",
                         "ready min ms", "floor min ms", "CPU ms (all processes)"],
                        [[str(r["workers"]), _fmt(r["ready_ms"]), _fmt(r["first_result_ms"]),
                          _fmt(r["fork_floor_ms"]), _ratio(r["ready_over_floor"]),
                          _fmt(r["ready_min_ms"]), _fmt(r["fork_floor_min_ms"]),
                          _fmt(r.get("start_cpu_ms"))] for r in py["rows"]]))
        c = k.get("c") or {}
        if c.get("rows"):
            by = {(r["name"], r["mode"], r["workers"]): r for r in c["rows"]}
            rows = []
            for n in sorted({r["workers"] for r in c["rows"]}):
                p, f1 = by.get(("pool", "ready", n)), by.get(("pool", "first_result", n))
                ch, tr = by.get(("fork_chain", "ready", n)), by.get(("fork_tree", "ready", n))
                ms = lambda r: r and r["p50_ns"] / 1e6  # noqa: E731
                rows.append([str(n), _fmt(ms(p)), _fmt(ms(f1)), _fmt(ms(ch)), _fmt(ms(tr)),
                             _ratio(_div(ms(p), ms(ch))), _ratio(_div(ms(ch), ms(tr)))])
            out.append((f"(k) {k['title']}, C ({c['heap_mib']} MiB heap; median of {c['repetitions']})",
                        ["workers", "ready ms", "first result ms", "fork chain ms", "fork tree ms",
                         "ready / chain", "chain / tree"], rows))
    if "l" in sc:
        libs = [l for l in _libs(data, "l") if _res(data, "l", l)]
        by = {l: {r["bytes"]: r for r in _res(data, "l", l)["rows"]} for l in libs}
        sizes = sorted({b for l in libs for b in by[l]})
        for way in ("send", "return"):
            rows = []
            for b in sizes:
                mr = (by.get("multicore", {}).get(b) or {}).get(way)
                row = [_size(b)]
                for l in libs:
                    r = (by[l].get(b) or {}).get(way)
                    row.append(f"{_fmt(r['p50_us'])} / {_fmt(r['gb_s'])}" if r else "-")
                for l in libs:
                    if l != "multicore":
                        r = (by[l].get(b) or {}).get(way)
                        row.append(_ratio(_div(r and r["p50_us"], mr and mr["p50_us"])))
                rows.append(row)
            for l in _libs(data, "l"):
                st = _status(data, "l", l)
                if st:
                    rows.append([LABELS[l], st] + [""] * (2 * len(libs) - 1))
            what = ("sent (the worker returns its size)" if way == "send"
                    else "returned (the worker builds it)")
            floor = ("copy into fresh shm" if way == "send" else "build + copy into fresh shm")
            out.append((f"(l) plain numpy payload {what}: round trip p50 us / GB/s; "
                        f"in-process = floor ({floor}); others / mc on p50",
                        ["payload"] + [LABELS[l].replace(" (ref.)", " floor") for l in libs]
                        + [f"{LABELS[l].replace(' (ref.)', ' floor')} / mc" for l in libs
                           if l != "multicore"], rows))
    if "m" in sc:
        for lib in _libs(data, "m"):
            r = _res(data, "m", lib)
            st = _status(data, "m", lib)
            if st:
                out.append((f"(m) {sc['m']['title']}: {LABELS[lib]}", ["status"], [[st]]))
                continue
            two = next((x for x in r["rows"] if x["workers"] == 2), None)
            rows = []
            for x in r["rows"]:
                rows.append([str(x["workers"]), str(x["live_workers"]),
                             _fmt(x["one_by_one_per_s"]),
                             _ratio(_div(x["one_by_one_per_s"], two and two["one_by_one_per_s"])),
                             _fmt(x["map_per_s"]),
                             _ratio(_div(x["map_per_s"], two and two["map_per_s"])),
                             _fmt(x["caller_cpu_us_per_task"]), _fmt(x["workers_cpu_us_per_task"]),
                             _fmt(x["caller_switches_per_task"]),
                             _fmt(x["workers_switches_per_task"])])
            out.append((f"(m) {sc['m']['title']}: {LABELS[lib]}, {r['tasks']:,} tasks one by one, "
                        f"map over {r['items']:,} items ({r['map_method']}); best of reps; "
                        f"CPU and switches per one-by-one task (others {_fmt(r.get('interference_percent'))} %)",
                        ["workers", "live", "one-by-one /s", "vs 2 workers", "map items/s",
                         "vs 2 workers", "caller CPU us", "workers CPU us", "caller switches",
                         "workers switches"], rows))
            pairs = r.get("pairs")
            if pairs:
                prow = [[str(i + 1), _fmt(x["two"]["one_by_one_per_s"]), _fmt(x["top"]["one_by_one_per_s"]),
                         _ratio(x["one_by_one_ratio"]), _fmt(x["two"]["map_per_s"]),
                         _fmt(x["top"]["map_per_s"]), _ratio(x["map_ratio"])]
                        for i, x in enumerate(pairs["rounds"])]
                prow.append(["median", "", "", _ratio(pairs["one_by_one_ratio"]), "", "",
                             _ratio(pairs["map_ratio"])])
                top = pairs["workers"]
                out.append((f"(m) {LABELS[lib]}: 2 workers against {top}, alternating rounds "
                            f"(fresh pools, every worker live, best of 3 each)",
                            ["round", "one-by-one /s, 2", f"one-by-one /s, {top}", f"{top} / 2",
                             "map items/s, 2", f"map items/s, {top}", f"{top} / 2"], prow))
    if "n" in sc:
        rows = []
        for lib in _libs(data, "n"):
            r = sc["n"]["results"].get(lib) or {}
            if "error" in r or not r:
                rows.append([LABELS[lib], "error: " + str(r.get("error"))] + [""] * 7)
                continue
            for key in ("parts", "items"):
                x = r[key]
                rows.append([LABELS[lib], x["method"], f"{x['n']:,}", _fmt(x["seconds"]),
                             _fmt(x["per_s"]), _fmt(x["caller_peak_rss_above_mib"]),
                             _fmt(x["caller_peak_bytes_per_item"]),
                             _fmt(x.get("shm_peak_mib")) if "shm_peak_mib" in x else "-",
                             _fmt(r.get("interference_percent"))])
        mc, mp = sc["n"]["results"].get("multicore") or {}, sc["n"]["results"].get("mp_pool") or {}
        for key in ("parts", "items"):
            if key in mc and key in mp:
                rows.append(["mp.Pool / mc", key, "", _ratio(_div(mp[key]["seconds"], mc[key]["seconds"])),
                             "", _ratio(_div(mp[key]["caller_peak_rss_above_mib"],
                                             mc[key]["caller_peak_rss_above_mib"])), "", "", ""])
        out.append((f"(n) {sc['n']['title']} (fresh interpreter each; caller peak RSS above "
                    f"its RSS before; shared memory peak sampled every 5 ms)",
                    ["library", "method", "items", "seconds", "items/s", "caller peak MiB",
                     "caller B/item", "shm peak MiB", "others %"], rows))
    return out


def _size(b):
    for unit, n in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if b >= n:
            return f"{b / n:g} {unit}"
    return f"{b} B"


def render_text(tbls):
    lines = []
    for title, headers, rows in tbls:
        # a status row ("missing: ...", "error: ...") spans the row: no width
        span = [len(r) > 2 and all(c == "" for c in r[2:]) for r in rows]
        sized = [r for r, sp in zip(rows, span) if not sp]
        sized += [[r[0]] + [""] * (len(r) - 1) for r, sp in zip(rows, span) if sp]
        widths = [max(len(str(x)) for x in col) for col in zip(headers, *sized)]
        lines.append(title)
        lines.append("  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip())
        lines.append("  ".join("-" * w for w in widths))
        for r, sp in zip(rows, span):
            if sp:
                lines.append(str(r[0]).ljust(widths[0]) + "  " + str(r[1]))
            else:
                lines.append("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())
        lines.append("")
    return "\n".join(lines)


def render_markdown(tbls):
    lines = []
    for title, headers, rows in tbls:
        lines.append(f"**{title}**\n")
        lines.append("| " + " | ".join(headers) + " |")
        lines.append("|" + "|".join("---" for _ in headers) + "|")
        for r in rows:
            lines.append("| " + " | ".join(str(c).replace("|", "/") for c in r) + " |")
        lines.append("")
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# targets of issue 4
# ---------------------------------------------------------------------------

def _of_rounds(pairs, key):
    """How a target's figure was made from alternating rounds ((h), (m)):
    the median of the rounds' ratios pairs[key], and their range; for (h),
    of its steady rounds, when it had any."""
    rounds = pairs["rounds"]
    if pairs.get("steady_rounds"):
        each = [r[key] for r in rounds if r["steady"]]
        return (f"median of {len(each)} steady rounds of {len(rounds)} "
                f"({min(each):.2f}-{max(each):.2f}x)")
    each = [r[key] for r in rounds]
    return f"median of {len(each)} alternating rounds ({min(each):.2f}-{max(each):.2f}x)"


def targets(data, cores):
    T = []

    def add(tid, text, value, threshold, reached, detail=""):
        T.append({"id": tid, "target": text, "value": value, "threshold": threshold,
                  "reached": reached, "detail": detail})

    def get(scen, lib, *keys):
        r = _res(data, scen, lib)
        for k in keys:
            if r is None:
                return None
            r = r.get(k)
        return r

    def best_peer(scen, key, pick):
        vals = {p: get(scen, p, *key) for p in PEERS}
        vals = {p: v for p, v in vals.items() if v is not None}
        if not vals:
            return None, None
        p = pick(vals, key=vals.get)
        return p, vals[p]

    def check(tid, text, mc_v, ref_v, factor, better, detail_ref, unit=""):
        if mc_v is None or ref_v is None:
            add(tid, text, mc_v, None, None, "not measured")
            return
        thr = ref_v * factor
        ok = mc_v <= thr if better == "lower" else mc_v >= thr
        add(tid, text, mc_v, thr, ok,
            f"multicore {_fmt(mc_v)}{unit} vs {detail_ref} {_fmt(ref_v)}{unit}")

    check("a_p50", "(a) p50 <= 1/20 of mp.Pool's", get("a", "multicore", "p50_us"),
          get("a", "mp_pool", "p50_us"), 1 / 20, "lower", "mp.Pool", " us")
    p, v = best_peer("a", ("p99_us",), min)
    check("a_p99", "(a) p99 <= 1/20 of the best peer's p99", get("a", "multicore", "p99_us"),
          v, 1 / 20, "lower", f"best peer ({LABELS.get(p, p)})", " us")
    # issue 12 section 2: absolute, for an idle machine (others' share of
    # the CPUs during the row is in the detail)
    for q, limit in (("p50", 3), ("p99", 10)):
        v = get("a", "multicore", f"{q}_us")
        busy = get("a", "multicore", "interference_percent")
        add(f"a_{q}_abs", f"(a) {q} <= {limit} us on an idle machine (issue 12)", v, limit,
            None if v is None else v <= limit,
            "not measured" if v is None else
            f"multicore {_fmt(v)} us; others used {_fmt(busy)} % of the CPUs meanwhile")
    check("b", "(b) >= 5x mp.Pool apply_async rate", get("b", "multicore", "tasks_per_s"),
          get("b", "mp_pool", "tasks_per_s"), 5, "higher", "mp.Pool", " tasks/s")
    check("c", "(c) >= 1.5x mp.Pool.map best chunked rate", get("c", "multicore", "tasks_per_s"),
          get("c", "mp_pool", "tasks_per_s"), 1.5, "higher", "mp.Pool.map", " tasks/s")
    want_d = 1.95 if cores == 2 else 0.975 * cores
    sd = get("d", "multicore", "speedup")
    add("d", f"(d) speedup >= {want_d:g} on {cores} cores", sd, want_d,
        None if sd is None else sd >= want_d,
        "not measured" if sd is None else f"multicore {_fmt(sd)}x")

    e = _res(data, "e", "multicore") or {}
    for size in sorted((k for k in e if k.isdigit()), key=int):
        check(f"e_send_{size}", f"(e) {size} MiB: sending >= 5x joblib/loky",
              get("e", "multicore", size, "send_gb_s"), get("e", "joblib", size, "send_gb_s"),
              5, "higher", "joblib", " GB/s")
        vals = {p: get("e", p, size, "return_gb_s") for p in PEERS}
        vals = {p: v for p, v in vals.items() if v is not None}
        bp = max(vals, key=vals.get) if vals else None
        check(f"e_return_{size}", f"(e) {size} MiB: returning >= 10x the best peer",
              get("e", "multicore", size, "return_gb_s"), vals.get(bp), 10, "higher",
              f"best peer ({LABELS.get(bp, bp)})", " GB/s")
        for way in ("send", "return"):
            check(f"e_{way}_inproc_{size}", f"(e) {size} MiB: {way} >= half of in-process",
                  get("e", "multicore", size, f"{way}_gb_s"),
                  get("e", "inprocess", size, f"{way}_gb_s"), 0.5, "higher", "in-process", " GB/s")
        for way in ("send", "return"):
            check(f"e_{way}_floor_{size}",
                  f"(e) {size} MiB: plain-array {way} within 1.25x of its copy floor (issue 12)",
                  get("e", "multicore", size, f"{way}_copy_gb_s"),
                  get("e", "inprocess", size, f"{way}_floor_gb_s"), 1 / 1.25, "higher",
                  "floor", " GB/s")
            factor = 5 if way == "send" else 10
            p, v = best_peer("e", (size, f"{way}_gb_s"), max)
            check(f"e_{way}_plain_peer_{size}",
                  f"(e) {size} MiB: plain-array {way} >= {factor}x the best peer (issue 12)",
                  get("e", "multicore", size, f"{way}_copy_gb_s"), v, factor, "higher",
                  f"best peer ({LABELS.get(p, p)})", " GB/s")
            # A plain array sent is copied once into shared memory whatever
            # the library: the warm floor (that copy into memory already
            # faulted in, plus the work) bounds what any implementation can
            # reach. One returned is not copied (a worker's own array is
            # moved to the caller): building it in place bounds it.
            if way == "send":
                bound = get("e", "inprocess", size, "send_warm_floor_gb_s")
                name, beyond = "the warm copy floor", "beyond any path that copies (multicore.shared does not)"
            else:
                bound = get("e", "inprocess", size, "return_build_floor_gb_s")
                name, beyond = ("the build floor (the array written in place into warm memory, "
                                "no copy)", "beyond this machine's memory write speed")
            if v and bound and T[-1]["reached"] is False:
                T[-1]["detail"] += (f"; {name}, {_fmt(bound)} GB/s, is "
                                    f"{bound / v:.1f}x the best peer: {factor}x is "
                                    + (beyond if bound / v < factor else "within reach"))

    check("f", "(f) start-up <= half of mp.Pool's",
          get("f", "multicore", "start_to_first_result_s"),
          get("f", "mp_pool", "start_to_first_result_s"), 0.5, "lower", "mp.Pool", " s")
    g = _res(data, "g", "multicore")
    if g is None:
        add("g", "(g) idle pool uses zero CPU", None, 0, None, "not measured")
    else:
        add("g", "(g) idle pool uses zero CPU", g["cpu_ms"], 0, g["ticks"] == 0,
            f"{g['ticks']} clock ticks ({g['cpu_ms']:.0f} ms) of utime+stime in {g['seconds']:.1f} s; "
            f"schedstat {g.get('schedstat_ms', float('nan')):.3f} ms")

    h = data["scenarios"].get("h", {})
    rows = {(r["name"], r["mode"], r["workers"]): r for r in h.get("rows", [])}
    mc_hot = rows.get(("multicore_reused_group", "hot", 1))
    mc_sl = rows.get(("multicore_reused_group", "after_sleep", 1))
    sp = rows.get(("spin_floor", "hot", 1))
    fx = rows.get(("futex_floor", "after_sleep", 1))
    hp = h.get("pairs")
    for tid, text, mc_r, ref_r, factor, key, floor_name in (
            ("h_hot", "(h) C round trip hot within 2x of the spinning floor (p50)",
             mc_hot, sp, 2, "hot_ratio", "spin floor"),
            ("h_sleep", "(h) C round trip after sleep within 1.2x of the futex floor (p50)",
             mc_sl, fx, 1.2, "sleep_ratio", "futex floor")):
        if not hp:   # a run from before the alternating rounds
            check(tid, text, mc_r and mc_r["p50_ns"] / 1e3, ref_r and ref_r["p50_ns"] / 1e3,
                  factor, "lower", floor_name, " us")
            continue
        single = (f"; in the long runs, {_fmt(mc_r['p50_ns'] / 1e3)} against "
                  f"{_fmt(ref_r['p50_ns'] / 1e3)} us" if mc_r and ref_r else "")
        add(tid, text, hp[key], factor, hp[key] <= factor,
            f"{hp[key]:.2f}x the {floor_name}, {_of_rounds(hp, key)}{single}")
    m = _res(data, "m", "multicore")
    if m:
        rows = {x["workers"]: x for x in m["rows"]}
        top = max(rows)
        pairs = m.get("pairs")
        for key, what in (("one_by_one_per_s", "tasks one by one"), ("map_per_s", "map")):
            v, ref = rows[top].get(key), (rows.get(2) or {}).get(key)
            sweep = f"{_fmt(v)}/s with {top} against {_fmt(ref)}/s with 2: {v / ref:.2f}x" if v and ref else ""
            if pairs:
                rkey = key.replace("_per_s", "_ratio")
                ratio = pairs[rkey]
                add(f"m_{key}", f"(m) {what}: {top} workers >= 0.8x of 2 workers (issue 12)",
                    ratio, 0.8, ratio >= 0.8,
                    f"{ratio:.2f}x, {_of_rounds(pairs, rkey)}; in the sweep, {sweep}")
            elif top > 2 and v and ref:
                add(f"m_{key}", f"(m) {what}: {top} workers >= 0.8x of 2 workers (issue 12)",
                    v / ref, 0.8, v / ref >= 0.8, sweep)
    j = (data["scenarios"].get("j") or {}).get("python") or {}
    if "shm_overhead_per_task" in j:
        add("j", "(j) shared memory per task <= 128 B beyond its payload (issue 12)",
            j["shm_overhead_per_task"], 128, j["shm_overhead_per_task"] <= 128,
            f"{j['shm_bytes_per_task']:.0f} B a task for {j['payload_bytes_per_task']:.0f} B of "
            f"payload ({j['tasks']:,} tasks)")
    else:
        add("j", "(j) shared memory per task <= 128 B beyond its payload (issue 12)", None, 128,
            None, "not measured")
    return T


def render_targets(T, markdown=False):
    lines = []
    if markdown:
        lines += ["| target | reached | figures |", "|---|---|---|"]
    for t in T:
        mark = {True: "yes", False: "NO", None: "n/a"}[t["reached"]]
        if markdown:
            lines.append(f"| {t['target']} | {mark} | {t['detail']} |")
        else:
            lines.append(f"  [{mark:>3}] {t['target']}: {t['detail']}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# PNG
# ---------------------------------------------------------------------------

def draw_png(data, path):
    """Returns None on success, else why there is no PNG."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        return f"matplotlib is not installed ({exc}); no PNG drawn"

    colors = {"multicore": "#d62728", "mp_pool": "#1f77b4", "futures": "#17becf",
              "joblib": "#2ca02c", "mpire": "#9467bd", "ray": "#ff7f0e", "inprocess": "#7f7f7f"}
    panels = []

    def series(scen, getter):
        libs, vals = [], []
        for lib in _libs(data, scen):
            r = _res(data, scen, lib)
            v = getter(r) if r else None
            if v is not None:
                libs.append(lib)
                vals.append(v)
        return libs, vals

    sc = data["scenarios"]
    if "a" in sc:
        panels.append(("(a) round trip p50, us (lower is better)",
                       *series("a", lambda r: r["p50_us"]), True))
    if "b" in sc:
        panels.append(("(b) one-by-one tasks/s", *series("b", lambda r: r["tasks_per_s"]), True))
    if "c" in sc:
        panels.append(("(c) batched tasks/s", *series("c", lambda r: r["tasks_per_s"]), True))
    if "d" in sc:
        panels.append(("(d) CPU-bound speedup", *series("d", lambda r: r["speedup"]), False))
    if "e" in sc:
        sizes = sorted({int(k) for lib in _libs(data, "e") for k in (_res(data, "e", lib) or {})
                        if k.isdigit()})
        big = str(sizes[-1]) if sizes else None
        if big:
            panels.append((f"(e) send {big} MiB array, GB/s",
                           *series("e", lambda r: (r.get(big) or {}).get("send_gb_s")), True))
            panels.append((f"(e) return {big} MiB array, GB/s",
                           *series("e", lambda r: (r.get(big) or {}).get("return_gb_s")), True))
    if "f" in sc:
        panels.append(("(f) start-up to first result, ms",
                       *series("f", lambda r: 1e3 * r["start_to_first_result_s"]), True))
    if "g" in sc:
        panels.append(("(g) idle pool CPU ms (schedstat) over the window",
                       *series("g", lambda r: r.get("schedstat_ms", r["cpu_ms"])), False))
    if "h" in sc and sc["h"].get("rows"):
        names, vals = [], []
        for r in sc["h"]["rows"]:
            if r["workers"] != 1:
                continue
            names.append(r["name"].replace("multicore_", "mc ").replace("_floor", "") +
                         (" hot" if r["mode"] == "hot" else " slept"))
            vals.append(r["p50_ns"] / 1e3)
        panels.append(("(h) C round trip p50, us", names, vals, True))

    meta = data["meta"]
    n = len(panels)
    cols = 3
    rows = max(1, math.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.6 * rows))
    axes = list(getattr(axes, "flat", [axes]))
    for ax, (title, libs, vals, log) in zip(axes, panels):
        labels = [LABELS.get(l, l).replace(" (ref.)", "") for l in libs]
        cs = [colors.get(l, "#d62728" if str(l).startswith("mc") else "#555555") for l in libs]
        ax.bar(range(len(vals)), vals, color=cs)
        ax.set_xticks(range(len(vals)))
        ax.set_xticklabels(labels, rotation=35, ha="right", fontsize=8)
        ax.set_title(title, fontsize=10)
        if log and vals and min(vals) > 0:
            ax.set_yscale("log")
        for i, v in enumerate(vals):
            ax.annotate(_fmt(v), (i, v), ha="center", va="bottom", fontsize=7)
        if title.startswith("(d)") and vals:
            ax.axhline(meta.get("workers") or 2, color="#555555", lw=0.8, ls="--")
    for ax in axes[n:]:
        ax.axis("off")
    missing = [f"{LABELS.get(l, l)} ({p.get('error')})" for l, p in data["peers"].items()
               if p.get("available") is False]
    if missing:
        fig.text(0.01, 0.005, "Missing peers (could not be imported): " + "; ".join(missing),
                 fontsize=8, color="#aa0000")
    fig.suptitle(f"multicore vs peers - {meta.get('cpu', '?')}, {meta.get('cores', '?')} cores, "
                 f"Python {meta.get('python', '?')}" + (" (QUICK: not for quoting)" if meta.get("quick") else ""),
                 fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def draw_growth_png(data, path):
    """How cost grows (issue 12 section 4): (l), (m), (n) as line plots.
    Returns None on success, else why there is no PNG."""
    sc = data["scenarios"]
    if not any(k in sc for k in ("l", "m", "n")):
        return "no growth scenario (l, m, n) in this run; no growth PNG drawn"
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        return f"matplotlib is not installed ({exc}); no growth PNG drawn"
    colors = {"multicore": "#d62728", "mp_pool": "#1f77b4", "joblib": "#2ca02c",
              "ray": "#ff7f0e", "inprocess": "#7f7f7f"}
    fig, axes = plt.subplots(2, 3, figsize=(16, 8.4))
    ax = axes.flat
    if "l" in sc:
        for i, (way, title) in enumerate((("send", "sent"), ("return", "returned"))):
            for lib in _libs(data, "l"):
                r = _res(data, "l", lib)
                if not r:
                    continue
                xs = [x["bytes"] for x in r["rows"] if way in x]
                label = LABELS[lib].replace(" (ref.)", " floor")
                ax[i].plot(xs, [x[way]["p50_us"] for x in r["rows"] if way in x], "o-",
                           ms=3, color=colors.get(lib), label=label)
                ax[2].plot(xs, [x[way]["gb_s"] for x in r["rows"] if way in x],
                           "o-" if way == "send" else "s--", ms=3, color=colors.get(lib),
                           label=f"{label} {way}")
            ax[i].set_title(f"(l) round trip p50 (us), payload {title}", fontsize=10)
            ax[i].set_xscale("log", base=2)
            ax[i].set_yscale("log")
            ax[i].set_xlabel("payload bytes")
            ax[i].legend(fontsize=7)
            ax[i].grid(True, which="major", alpha=0.3)
        ax[2].set_title("(l) GB/s (payload / p50)", fontsize=10)
        ax[2].set_xscale("log", base=2)
        ax[2].set_yscale("log")
        ax[2].set_xlabel("payload bytes")
        ax[2].legend(fontsize=6, ncol=2)
        ax[2].grid(True, which="major", alpha=0.3)
    if "m" in sc:
        for j, (key, title) in enumerate((("one_by_one_per_s", "tasks one by one, per s"),
                                          ("map_per_s", "map items per s"))):
            a = ax[3 + j]
            for lib in _libs(data, "m"):
                r = _res(data, "m", lib)
                if not r:
                    continue
                a.plot([x["workers"] for x in r["rows"]], [x[key] for x in r["rows"]], "o-",
                       color=colors.get(lib), label=LABELS[lib])
                two = next((x[key] for x in r["rows"] if x["workers"] == 2), None)
                if lib == "multicore" and two:
                    a.axhline(0.8 * two, color=colors[lib], lw=0.8, ls=":",
                              label="0.8 x multicore's 2-worker figure")
            a.set_title(f"(m) {title} against workers", fontsize=10)
            a.set_xscale("log", base=2)
            a.set_yscale("log")
            a.set_xlabel("workers (2 cores)")
            a.legend(fontsize=7)
            a.grid(True, which="major", alpha=0.3)
    if "n" in sc:
        a = ax[5]
        labels, secs, mem, cs = [], [], [], []
        for lib in _libs(data, "n"):
            r = sc["n"]["results"].get(lib) or {}
            for key in ("parts", "items"):
                if key in r:
                    labels.append(f"{LABELS[lib]}\n{r[key]['n']:,}")
                    secs.append(r[key]["seconds"])
                    mem.append(r[key]["caller_peak_rss_above_mib"] + r[key].get("shm_peak_mib", 0))
                    cs.append(colors.get(lib))
        xs = range(len(labels))
        a.bar([x - 0.2 for x in xs], secs, 0.4, color=cs, label="seconds")
        a2 = a.twinx()
        a2.bar([x + 0.2 for x in xs], mem, 0.4, color=cs, alpha=0.4, hatch="//",
               label="peak MiB (caller RSS + shm)")
        for x, v, m in zip(xs, secs, mem):
            a.annotate(_fmt(v) + " s", (x - 0.2, v), ha="center", va="bottom", fontsize=7)
            a2.annotate(_fmt(m) + " MiB", (x + 0.2, m), ha="center", va="bottom", fontsize=7)
        a.set_xticks(list(xs))
        a.set_xticklabels(labels, fontsize=7)
        a.set_ylabel("seconds")
        a2.set_ylabel("peak MiB (hatched)")
        a.set_title("(n) one big job: seconds (solid), peak memory (hatched)", fontsize=10)
    for a in ax:
        if not a.has_data():
            a.axis("off")
    meta = data["meta"]
    fig.suptitle(f"multicore: how cost grows - {meta.get('cpu', '?')}, {meta.get('cores', '?')} cores"
                 f", load {meta.get('loadavg_start')} -> {meta.get('loadavg_end')}"
                 + (" (QUICK: not for quoting)" if meta.get("quick") else ""), fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
