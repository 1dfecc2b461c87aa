// qcow2 metadata cache: cluster-sized tables (L2 tables, refcount blocks) keyed by host
// offset, with LRU order, dirty tracking and a bound. Not thread-safe: the engine holds its
// metadata lock around every call. It does no I/O; the engine writes dirty tables back.
#pragma once

#include <cstddef>
#include <cstdint>
#include <list>
#include <unordered_map>
#include <vector>

namespace blk::qcow2 {

class MetaCache {
public:
    struct Entry {
        uint64_t offset = 0;           // host offset of the table
        std::vector<std::byte> data;   // the table, one cluster
        bool dirty = false;            // changed since it was read or last written back
    };

    explicit MetaCache(size_t max_entries) : max_(max_entries < 1 ? 1 : max_entries) {}

    // The cached table at `offset`, made most recently used; null if absent. The pointer
    // stays valid until the next insert(), trim() or drop().
    Entry* find(uint64_t offset);
    // Adds a table (replacing none: the offset must be absent). Clean entries beyond the
    // bound are evicted, least recently used first, never the new one; dirty entries stay
    // until written back, so the cache may run over its bound until then.
    Entry* insert(uint64_t offset, std::vector<std::byte> data, bool dirty);
    void mark_dirty(Entry* e) {
        if (!e->dirty) ++dirty_count_;
        e->dirty = true;
    }
    void mark_clean(Entry* e) {
        if (e->dirty) --dirty_count_;
        e->dirty = false;
    }
    // Dirty entries in host offset order (for sequential write-back).
    std::vector<Entry*> dirty_entries();
    // Evicts clean entries until the cache is within its bound (or only dirty ones are left).
    void trim();
    // Forgets the table at `offset` (dirty or not).
    void drop(uint64_t offset);

    size_t size() const { return lru_.size(); }
    size_t max_entries() const { return max_; }
    size_t dirty_count() const { return dirty_count_; }
    // True when dirty entries alone exceed the bound: time to write back.
    bool needs_writeback() const { return dirty_count_ > max_; }

private:
    void evict_clean(const Entry* keep);

    size_t max_;
    size_t dirty_count_ = 0;
    std::list<Entry> lru_;  // most recently used first
    std::unordered_map<uint64_t, std::list<Entry>::iterator> index_;
};

}  // namespace blk::qcow2
