// The compare job behind `blkimg compare`.
//
// The calling thread walks both images' block status in the order qemu-img compare does and
// cuts the range into qemu-img's requests ("chunks": one status run of both images, at most
// 2 MiB where something must be read). Each chunk gets qemu-img's rule:
//   - both read as zero (or neither image allocates it): equal, nothing is read;
//   - both allocated: read both and compare 512-byte sectors from the chunk's start;
//   - one allocated: that image's chunk must read as zeroes.
// Chunks are packed into work items of at most kItemBytes per image, which the workers read
// (coalescing neighbouring chunks into one request) and compare in parallel. Results are
// settled in offset order on the calling thread, so the verdict is the first event qemu-img's
// sequential loop would meet: a mismatch, a read error in a chunk, a block-status error or,
// in strict mode, a block-status mismatch. The offsets named are qemu-img's: a chunk's first
// differing (or non-zero) sector, the chunk's start for a read error.
#include "blk/compare.h"

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <thread>

#include "blk/block_status.h"
#include "zero_scan.h"

namespace blk {

namespace {

constexpr uint64_t kSector = 512;
// qemu-img compare's request size (IO_BUF_SIZE): it bounds a chunk that is read, and so the
// offset a read error is reported at.
constexpr uint64_t kChunkBytes = 2ull << 20;
// What one work item reads from each image: whole chunks only, so an error or mismatch can be
// placed in the chunk qemu-img would have found it in.
constexpr uint64_t kItemBytes = kChunkBytes;
// An item also closes after this many chunks or this much guest range, so settling (and
// progress) keeps moving over long runs of chunks that need no reading.
constexpr size_t kItemMaxChunks = 1024;
constexpr uint64_t kItemMaxSpan = 1ull << 30;
// What a worker reads from each image at a time (its two buffers).
constexpr uint64_t kPieceBytes = 512 * 1024;
// Blocks compared with one memcmp before looking at single sectors.
constexpr uint64_t kScanBlock = 64 * 1024;

enum class Kind : uint8_t { Skip, Both, Only0, Only1 };

struct Chunk {
    uint64_t off = 0;
    uint64_t len = 0;
    Kind kind = Kind::Skip;
    uint64_t pos = 0;  // pieces: where the bytes go in the worker's buffers
};

bool reads(const Chunk& c, int side) {
    return c.kind == Kind::Both || (side == 0 ? c.kind == Kind::Only0 : c.kind == Kind::Only1);
}

// What ends the comparison after an item's chunks: a status error or mismatch the walk met.
struct Terminal {
    CompareVerdict verdict = CompareVerdict::Identical;
    uint64_t offset = 0;
    unsigned image = 0;
    Error error;
};

struct Item {
    uint64_t seq = 0;
    uint64_t start = 0;
    uint64_t end = 0;
    uint64_t read_bytes = 0;
    std::vector<Chunk> chunks;
    std::optional<Terminal> terminal;
};

struct ItemResult {
    uint64_t span = 0;
    std::vector<DiffRange> diffs;
    std::optional<Terminal> read_error;
    std::optional<Terminal> terminal;
};

void add_diff(std::vector<DiffRange>& out, uint64_t off, uint64_t len) {
    if (!out.empty() && out.back().offset + out.back().length == off) {
        out.back().length += len;
    } else {
        out.push_back({off, len});
    }
}

// Differing (b == null: non-zero) 512-byte sectors of a chunk at guest offset `off`, counted
// from the chunk's start as qemu-img counts them. Returns true if any was found.
bool diff_chunk(const std::byte* a, const std::byte* b, uint64_t off, uint64_t len, bool first_only,
                std::vector<DiffRange>& out) {
    bool found = false;
    for (uint64_t blk = 0; blk < len; blk += kScanBlock) {
        const uint64_t n = std::min(kScanBlock, len - blk);
        const bool same = b ? std::memcmp(a + blk, b + blk, n) == 0 : copy_detail::is_zero({a + blk, n});
        if (same) continue;
        for (uint64_t s = blk; s < blk + n; s += kSector) {
            const uint64_t m = std::min(kSector, len - s);
            const bool eq = b ? std::memcmp(a + s, b + s, m) == 0 : copy_detail::is_zero({a + s, m});
            if (eq) continue;
            add_diff(out, off + s, m);
            found = true;
            if (first_only) return true;
        }
    }
    return found;
}

class CompareJob {
public:
    CompareJob(Node* a, Node* b, const CompareOptions& o) : o_(o) {
        top_[0] = a;
        top_[1] = b;
        size_[0] = a->size();
        size_[1] = b->size();
        common_ = std::min(size_[0], size_[1]);
        total_ = std::max(size_[0], size_[1]);
        unsigned hw = std::max(std::thread::hardware_concurrency(), 1u);
        threads_ = o_.threads ? o_.threads : std::min(hw, 4u);
        window_ = threads_ * 3;
        first_only_ = o_.max_diffs == 0;
    }

    CompareResult run();

private:
    // The next chunk of the walk at off_, or a terminal event; false when the walk is done.
    bool next_chunk(Chunk& c, std::optional<Terminal>& term);
    bool produce(Item& item);
    void worker();
    ItemResult process(const Item& item, std::vector<std::byte> (&buf)[2]);
    ItemResult process_in_order(const Item& item, std::vector<std::byte> (&buf)[2]);
    // Settles finished items in order; true once the verdict is known.
    bool settle_locked();

    CompareOptions o_;
    Node* top_[2];
    uint64_t size_[2];
    uint64_t common_ = 0;
    uint64_t total_ = 0;
    unsigned threads_ = 1;
    size_t window_ = 3;
    bool first_only_ = true;

    // Walk state (calling thread only).
    uint64_t off_ = 0;
    bool walk_done_ = false;
    uint64_t next_seq_ = 0;

    std::mutex mu_;
    std::condition_variable work_cv_;   // workers wait for items
    std::condition_variable done_cv_;   // the calling thread waits for results
    std::deque<Item> queue_;
    std::map<uint64_t, ItemResult> done_;
    size_t in_flight_ = 0;  // produced and not settled
    uint64_t settled_seq_ = 0;
    uint64_t settled_bytes_ = 0;
    bool stop_ = false;
    bool final_ = false;
    CompareResult r_;
};

bool CompareJob::next_chunk(Chunk& c, std::optional<Terminal>& term) {
    if (off_ >= total_) return false;
    c = Chunk{};
    c.off = off_;
    if (off_ < common_) {
        unsigned flags[2];
        uint64_t run[2];
        unsigned strict_word[2];
        for (int s = 0; s < 2; ++s) {
            auto st = block_status_above(top_[s], nullptr, off_, size_[s] - off_);
            if (!st) {
                term = Terminal{CompareVerdict::StatusError, off_, static_cast<unsigned>(s), std::move(st).error()};
                return false;
            }
            flags[s] = st->status.flags;
            run[s] = st->status.bytes;
            strict_word[s] = (flags[s] & (kStatusData | kStatusZero | kStatusAllocated | kStatusOffsetValid)) |
                             (off_ + run[s] == size_[s] ? unsigned{kStatusEof} : 0u);
        }
        c.len = std::min(run[0], run[1]);
        if (o_.strict && strict_word[0] != strict_word[1]) {
            term = Terminal{CompareVerdict::StatusMismatch, off_, 0, {}};
            return false;
        }
        const bool alloc0 = flags[0] & kStatusAllocated;
        const bool alloc1 = flags[1] & kStatusAllocated;
        if ((flags[0] & kStatusZero) && (flags[1] & kStatusZero)) c.kind = Kind::Skip;
        else if (alloc0 == alloc1) c.kind = alloc0 ? Kind::Both : Kind::Skip;
        else c.kind = alloc0 ? Kind::Only0 : Kind::Only1;
    } else {
        // The longer image's tail must read as zeroes.
        const int s = size_[0] > size_[1] ? 0 : 1;
        auto st = block_status_above(top_[s], nullptr, off_, size_[s] - off_);
        if (!st) {
            term = Terminal{CompareVerdict::StatusError, off_, static_cast<unsigned>(s), std::move(st).error()};
            return false;
        }
        c.len = st->status.bytes;
        const unsigned f = st->status.flags;
        c.kind = (f & kStatusAllocated) && !(f & kStatusZero) ? (s == 0 ? Kind::Only0 : Kind::Only1) : Kind::Skip;
    }
    if (c.kind != Kind::Skip) c.len = std::min(c.len, kChunkBytes);
    // The shared range and the tail are walked separately, as qemu-img does.
    if (c.off < common_) c.len = std::min(c.len, common_ - c.off);
    off_ += c.len;
    return true;
}

bool CompareJob::produce(Item& item) {
    item = Item{};
    item.seq = next_seq_;
    item.start = item.end = off_;
    const bool in_tail = off_ >= common_;
    while (!walk_done_) {
        if (item.chunks.size() >= kItemMaxChunks || item.end - item.start >= kItemMaxSpan) break;
        if ((off_ >= common_) != in_tail) break;  // the tail starts a new item
        const uint64_t save = off_;
        Chunk c;
        std::optional<Terminal> term;
        if (!next_chunk(c, term)) {
            walk_done_ = true;
            item.terminal = std::move(term);
            break;
        }
        if (c.kind != Kind::Skip && item.read_bytes + c.len > kItemBytes && item.read_bytes > 0) {
            off_ = save;  // asked again for the next item: block status is cheap and stateless
            break;
        }
        if (c.kind != Kind::Skip) item.read_bytes += c.len;
        item.end = c.off + c.len;
        item.chunks.push_back(c);
    }
    if (item.chunks.empty() && !item.terminal) return false;
    ++next_seq_;
    return true;
}

ItemResult CompareJob::process(const Item& item, std::vector<std::byte> (&buf)[2]) {
    ItemResult res;
    res.span = item.end - item.start;
    res.terminal = item.terminal;
    for (auto& b : buf) b.resize(kPieceBytes);
    // Pieces of chunks (cut at kPieceBytes from each chunk's start, so sectors still count from
    // it) are gathered into batches of at most kPieceBytes per image; neighbouring pieces that
    // read the same image become one request.
    std::vector<Chunk> batch;
    uint64_t used = 0;
    bool found = false;
    auto flush = [&]() -> bool {
        for (int s = 0; s < 2; ++s) {
            size_t i = 0;
            while (i < batch.size()) {
                if (!reads(batch[i], s)) {
                    ++i;
                    continue;
                }
                size_t j = i + 1;
                uint64_t len = batch[i].len;
                while (j < batch.size() && reads(batch[j], s) && batch[j].off == batch[i].off + len) {
                    len += batch[j].len;
                    ++j;
                }
                if (!top_[s]->read(batch[i].off, {buf[s].data() + batch[i].pos, len})) return false;
                i = j;
            }
        }
        for (const Chunk& c : batch) {
            const std::byte* other = c.kind == Kind::Both ? buf[1].data() + c.pos : nullptr;
            const std::byte* mine = c.kind == Kind::Only1 ? buf[1].data() + c.pos : buf[0].data() + c.pos;
            if (diff_chunk(mine, other, c.off, c.len, first_only_, res.diffs)) found = true;
            if (found && first_only_) break;
        }
        batch.clear();
        used = 0;
        return true;
    };
    for (const Chunk& c : item.chunks) {
        if (c.kind == Kind::Skip) continue;
        for (uint64_t sub = 0; sub < c.len; sub += kPieceBytes) {
            Chunk piece{c.off + sub, std::min(kPieceBytes, c.len - sub), c.kind, used};
            if (used + piece.len > kPieceBytes) {
                if (!flush()) return process_in_order(item, buf);
                if (found && first_only_) return res;
                piece.pos = 0;
            }
            batch.push_back(piece);
            used += piece.len;
        }
    }
    if (!batch.empty() && !flush()) return process_in_order(item, buf);
    return res;
}

// A read failed somewhere in the item: go through its chunks one at a time as qemu-img does
// (read the whole chunk of the first image, then of the second, then compare), so what is
// reported is what qemu-img meets first. Only errors take this path, so reading a chunk twice
// (once to find errors, once to compare, a piece at a time) costs nothing that matters.
ItemResult CompareJob::process_in_order(const Item& item, std::vector<std::byte> (&buf)[2]) {
    ItemResult res;
    res.span = item.end - item.start;
    for (const Chunk& c : item.chunks) {
        if (c.kind == Kind::Skip) continue;
        for (int s = 0; s < 2; ++s) {
            if (!reads(c, s)) continue;
            for (uint64_t sub = 0; sub < c.len; sub += kPieceBytes) {
                auto st = top_[s]->read(c.off + sub, {buf[s].data(), std::min(kPieceBytes, c.len - sub)});
                if (!st) {
                    res.read_error = Terminal{CompareVerdict::ReadError, c.off, static_cast<unsigned>(s), std::move(st).error()};
                    return res;
                }
            }
        }
        for (uint64_t sub = 0; sub < c.len; sub += kPieceBytes) {
            const uint64_t n = std::min(kPieceBytes, c.len - sub);
            for (int s = 0; s < 2; ++s) {
                if (!reads(c, s)) continue;
                if (auto st = top_[s]->read(c.off + sub, {buf[s].data(), n}); !st) {
                    res.read_error = Terminal{CompareVerdict::ReadError, c.off, static_cast<unsigned>(s), std::move(st).error()};
                    return res;
                }
            }
            const std::byte* other = c.kind == Kind::Both ? buf[1].data() : nullptr;
            const std::byte* mine = c.kind == Kind::Only1 ? buf[1].data() : buf[0].data();
            if (diff_chunk(mine, other, c.off + sub, n, first_only_, res.diffs) && first_only_) return res;
        }
    }
    res.terminal = item.terminal;
    return res;
}

void CompareJob::worker() {
    std::vector<std::byte> buf[2];
    std::unique_lock lk(mu_);
    for (;;) {
        work_cv_.wait(lk, [&] { return stop_ || !queue_.empty(); });
        if (stop_) return;
        Item item = std::move(queue_.front());
        queue_.pop_front();
        lk.unlock();
        ItemResult res = process(item, buf);
        lk.lock();
        done_.emplace(item.seq, std::move(res));
        done_cv_.notify_one();
    }
}

bool CompareJob::settle_locked() {
    while (!final_) {
        auto it = done_.find(settled_seq_);
        if (it == done_.end()) break;
        ItemResult res = std::move(it->second);
        done_.erase(it);
        ++settled_seq_;
        --in_flight_;
        for (const DiffRange& d : res.diffs) {
            if (first_only_) {
                r_.verdict = CompareVerdict::Differ;
                r_.offset = d.offset;
                final_ = true;
                break;
            }
            if (!r_.diffs.empty() && r_.diffs.back().offset + r_.diffs.back().length == d.offset) {
                r_.diffs.back().length += d.length;
            } else if (r_.diffs.size() == o_.max_diffs) {
                r_.diffs_truncated = true;
                final_ = true;
                break;
            } else {
                r_.diffs.push_back(d);
            }
        }
        if (final_) break;
        settled_bytes_ += res.span;
        const std::optional<Terminal>& t = res.read_error ? res.read_error : res.terminal;
        if (t) {
            r_.verdict = t->verdict;
            r_.offset = t->offset;
            r_.image = t->image;
            r_.error = t->error;
            final_ = true;
        }
    }
    return final_;
}

CompareResult CompareJob::run() {
    r_.size[0] = size_[0];
    r_.size[1] = size_[1];
    if (o_.strict && size_[0] != size_[1]) {
        r_.verdict = CompareVerdict::SizeMismatch;
        return r_;
    }
    std::vector<std::thread> pool;
    pool.reserve(threads_);
    for (unsigned i = 0; i < threads_; ++i) pool.emplace_back([this] { worker(); });

    bool producing = true;
    uint64_t reported_bytes = 0;
    std::unique_lock lk(mu_);
    for (;;) {
        if (settle_locked()) break;
        if (o_.progress && settled_bytes_ != reported_bytes) {
            const uint64_t done = reported_bytes = settled_bytes_;
            lk.unlock();
            o_.progress(done, total_);
            lk.lock();
            if (settle_locked()) break;
        }
        if (producing && in_flight_ < window_) {
            lk.unlock();
            Item item;
            producing = produce(item);
            lk.lock();
            if (producing) {
                ++in_flight_;
                queue_.push_back(std::move(item));
                work_cv_.notify_one();
            }
            continue;
        }
        if (!producing && in_flight_ == 0) break;
        done_cv_.wait(lk, [&] { return done_.count(settled_seq_) > 0; });
    }
    stop_ = true;
    work_cv_.notify_all();
    lk.unlock();
    for (auto& t : pool) t.join();

    if (!first_only_ && !r_.diffs.empty() && r_.verdict == CompareVerdict::Identical) {
        r_.verdict = CompareVerdict::Differ;
        r_.offset = r_.diffs.front().offset;
    }
    // qemu-img looks at (and warns about) the longer image's tail once the shared range was
    // found equal.
    if (size_[0] != size_[1]) {
        const bool shared_equal = r_.diffs.empty() ? !(r_.verdict != CompareVerdict::Identical && r_.offset < common_)
                                                   : r_.diffs.front().offset >= common_;
        r_.tail_checked = shared_equal;
    }
    return r_;
}

}  // namespace

CompareResult compare_images(Node* a, Node* b, const CompareOptions& o) {
    CompareJob job(a, b, o);
    return job.run();
}

}  // namespace blk
