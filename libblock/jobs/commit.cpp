// The commit job (see blk/commit.h).
#include "blk/commit.h"

#include <climits>
#include <cstdlib>

#include "blk/driver.h"

namespace blk {

namespace {

// realpath() of `path`, or "" if it does not resolve.
std::string real_path(const std::string& path) {
    char buf[PATH_MAX];
    if (!::realpath(path.c_str(), buf)) return {};
    return buf;
}

// A protocol prefix ("nbd:", "file:"), as qemu's path_has_protocol: a colon before any slash.
bool has_protocol(const std::string& s) {
    const auto colon = s.find(':');
    if (colon == std::string::npos) return false;
    const auto slash = s.find('/');
    return slash == std::string::npos || colon < slash;
}

}  // namespace

Node* find_backing_image(Node& top, const std::string& name) {
    const bool protocol = has_protocol(name) || name.rfind("json:", 0) == 0;
    for (Node* cur = skip_filters(&top); cur; cur = skip_filters(backing_chain_next(cur))) {
        Node* below = backing_chain_next(cur);
        if (!below) break;
        const std::string stored = cur->backing_file_name();
        const std::string dir_of = base_filename(*cur);
        if (protocol || has_protocol(stored) || stored.rfind("json:", 0) == 0) {
            if (name == stored) return below;
            auto full = resolve_backing_name(dir_of, stored);
            if (full && *full == name) return below;
            continue;
        }
        auto want = resolve_backing_name(dir_of, name);
        auto have = resolve_backing_name(dir_of, stored);
        if (!want || !have) continue;
        const std::string a = real_path(*want), b = real_path(*have);
        if (!a.empty() && a == b) return below;
    }
    return nullptr;
}

// Why an interrupted or failed commit loses nothing (tests/interop/commit_robust.sh fails
// each write, flush and resize in turn, and signals the copy):
// - The top is only read until the base is complete: the copy writes the base, flushes it,
//   and the base is reopened read-only (its caches written back, flushed again) before
//   make_empty() touches the top. Whatever stops the job before that leaves the top byte for
//   byte as it was, and the chain still reads as before: every range the base got is still
//   allocated above it. An error while the top is emptied leaves part of its clusters in
//   place, but the base already holds all of them.
// - In the base, every cluster holds its old or its new content at every moment, because
//   the qcow2 engine orders its writes (see formats/qcow2/engine.h, writeback_locked()):
//   the data of a newly allocated cluster is written first (the L2 entry pointing at it is
//   changed only in the cache, after the data write returned); at write-back the refcount
//   blocks (and a grown refcount table, then the header naming it) go first, a host flush,
//   then the L2 tables, a flush, then the L1 table (a grown one at a new place, then the
//   header naming it), a flush, and only then the refcount decrements of the clusters
//   nothing points at any more. So an L2 entry never points at a cluster whose data is not
//   on disk or whose refcount is not yet counted; a stop between steps leaks clusters
//   (refcount without a reference: `qemu-img check` exit 3, harmless) and never leaves a
//   reference without a refcount. A cluster written in place (COPIED, refcount 1) is one
//   pwrite of its range: old or new bytes. A shared cluster (internal snapshots) is copied
//   to a new one like an unallocated cluster, so the snapshot's bytes are never written.
// - After an I/O error in metadata the engine writes nothing more (broken_), so the image
//   stays as its last complete write-back left it.
// - A raw base has no metadata: each write puts new bytes over old ones, and a grown raw
//   base's new tail reads as zeroes (its old content) until written.
Result<CommitStats> commit_image(Graph& g, const CommitOptions& o) {
    if (!o.top) return make_error(EINVAL, "commit: no top image");
    Node* layer = skip_filters(o.top);
    Node* base = o.base ? o.base : backing_chain_next(o.top);
    if (!base) return make_error(EINVAL, "Image does not have a backing file");
    // The base must lie below the top, found by role (cow edges, filters skipped).
    {
        Node* n = backing_chain_next(o.top);
        while (n && n != base) n = backing_chain_next(n);
        if (!n) return make_error(EINVAL, "commit: the base is not in the top's backing chain");
    }
    if (!g.contains(base)) return make_error(EINVAL, "commit: the base is not in the graph");
    CommitStats stats;
    BLK_TRY(g.reopen_read_write(*base));
    // Whatever happens next, the base goes back to read-only (written back) at the end.
    struct Restore {
        Graph& g;
        Node* n;
        bool armed = true;
        ~Restore() {
            if (armed) (void)g.reopen_read_only(*n);
        }
    } restore{g, base};

    const uint64_t old_size = base->size();
    if (old_size < o.top->size()) {
        BLK_TRY(base->truncate(o.top->size()).context("Could not resize the base image"));
        stats.base_grown = true;
    }
    CopyOptions c;
    c.sources = {o.top};
    c.target = base;
    c.base = base;
    // Beyond its old end a grown base reads as zeroes, unless it has a backing file of its
    // own that might show through: zero ranges there need no write.
    c.target_backing_size = cow_child(*skip_filters(base)) ? UINT64_MAX : old_size;
    c.rate_limit = o.rate_limit;
    c.threads = o.threads;
    c.progress = o.progress;
    c.cancel = o.cancel;
    // The base keeps its layout: guest-order writes, as qemu's job writes.
    // Errors name the base; the caller knows the top is untouched (see above).
    const std::string base_name = base_filename(*base);
    auto copied = copy_image(c);  // flushes the base
    if (!copied) {
        if (copied.error().code == ECANCELED) return std::move(copied).error();
        return std::move(copied).error().with_context("Could not commit into '" + base_name + "'");
    }
    stats.copy = *copied;
    // The base goes back to read-only (its caches written back and flushed once more)
    // before the top is touched: an error up to here leaves the top as it was.
    restore.armed = false;
    BLK_TRY(g.reopen_read_only(*base).context("Could not commit into '" + base_name + "'"));

    if (!o.drop) {
        // Only now, with the base complete and flushed, is the top emptied.
        if (layer->read_only()) BLK_TRY(g.reopen_read_write(*layer));
        // The base holds everything now: an error here loses nothing, the chain reads as before.
        const std::string emptied = "Committed into '" + base_name + "', but could not empty the image";
        // A format that cannot be emptied (raw) keeps its data: the base reads the same.
        if (layer->caps().make_empty) {
            BLK_TRY(layer->make_empty().context(emptied));
            BLK_TRY(layer->flush().context(emptied));
            stats.top_emptied = true;
        }
    }
    return stats;
}

}  // namespace blk
