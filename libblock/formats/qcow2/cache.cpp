// qcow2 metadata cache: LRU of cluster-sized tables with dirty tracking.
#include "cache.h"

#include <algorithm>

namespace blk::qcow2 {

MetaCache::Entry* MetaCache::find(uint64_t offset) {
    auto it = index_.find(offset);
    if (it == index_.end()) return nullptr;
    lru_.splice(lru_.begin(), lru_, it->second);
    return &*it->second;
}

MetaCache::Entry* MetaCache::insert(uint64_t offset, std::vector<std::byte> data, bool dirty) {
    lru_.push_front(Entry{offset, std::move(data), false});
    index_[offset] = lru_.begin();
    Entry* e = &lru_.front();
    if (dirty) mark_dirty(e);
    evict_clean(e);
    return e;
}

void MetaCache::evict_clean(const Entry* keep) {
    // Walk from the least recently used end; erase() hands back the entry after the erased
    // one, so stepping back from it continues with the next older entry.
    auto it = lru_.end();
    while (lru_.size() > max_ && it != lru_.begin()) {
        --it;
        if (!it->dirty && &*it != keep) {
            index_.erase(it->offset);
            it = lru_.erase(it);
        }
    }
}

void MetaCache::trim() { evict_clean(nullptr); }

std::vector<MetaCache::Entry*> MetaCache::dirty_entries() {
    std::vector<Entry*> out;
    out.reserve(dirty_count_);
    for (Entry& e : lru_)
        if (e.dirty) out.push_back(&e);
    std::sort(out.begin(), out.end(), [](const Entry* a, const Entry* b) { return a->offset < b->offset; });
    return out;
}

void MetaCache::drop(uint64_t offset) {
    auto it = index_.find(offset);
    if (it == index_.end()) return;
    if (it->second->dirty) --dirty_count_;
    lru_.erase(it->second);
    index_.erase(it);
}

}  // namespace blk::qcow2
