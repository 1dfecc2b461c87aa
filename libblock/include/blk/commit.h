// The commit job: what the layers above a base allocate is written into the base, and the
// top is emptied afterwards (qemu-img commit).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>

#include "blk/copy.h"
#include "blk/node.h"
#include "blk/result.h"

namespace blk {

struct CommitOptions {
    // The image to commit (the graph's root as a rule; a filter over it is fine).
    Node* top = nullptr;
    // Where to commit: a node of top's backing chain; null for top's immediate backing.
    Node* base = nullptr;
    // -d: the top keeps its clusters (otherwise it is emptied so it reads the base again).
    bool drop = false;
    // -r: bytes per second, 0 for no limit.
    uint64_t rate_limit = 0;
    // Worker threads; 0: one per core.
    unsigned threads = 0;
    // As CopyOptions::progress (bytes to copy from the layers above the base).
    std::function<void(uint64_t done, uint64_t total)> progress;
    // Set to stop the copy between requests (ECANCELED); the top is then left untouched.
    const std::atomic<bool>* cancel = nullptr;
};

struct CommitStats {
    CopyStats copy;
    bool base_grown = false;  // the base was smaller than the top and grew to its size
    bool top_emptied = false;  // false with drop, or where the top's format cannot be emptied
};

// The layer of top's backing chain whose backing file is named `name` as qemu-img commit -b
// matches it (qemu's bdrv_find_backing_image): `name` and each layer's stored backing file
// name, both resolved against that layer's directory, name the same file (realpath), or,
// for protocol or json: names, the strings are equal. Returns the backing node of that
// layer, or null if no layer names it.
Node* find_backing_image(Node& top, const std::string& name);

// Commits top into base: the base is reopened read-write in the graph (refused if another
// process holds it), grown to top's size if it is smaller (as qemu-img grows it), and
// gets every range the layers above it allocate, through the copy engine with the base as
// its explicit base (zero ranges become write_zeroes, compressed clusters are read like
// any other, unallocated ranges are never read). Then, unless drop, the top is emptied
// (Node::make_empty; a format that cannot is left as is, as qemu-img does); the base is
// back to read-only before that. A qcow2 base's internal snapshots keep their content (what they
// share is copied before it is written). Errors name the base ("Could not commit into 'B'")
// or, once the base is complete, say that only emptying the top failed. Intermediate
// layers are read, never written: after a commit into a deeper base they may read
// differently, as qemu documents for -b.
//
// Order of writes: the base is written, flushed and reopened read-only before the top is touched,
// so an interruption during the copy leaves the top whole (the chain still reads as
// before: every range written to the base is still allocated above it) and the base a
// consistent image whose clusters hold either old or new content (qcow2 writes data
// before the metadata that points at it, and refcounts before both; see commit.cpp).
Result<CommitStats> commit_image(Graph& g, const CommitOptions& o);

}  // namespace blk
