// The copy engine's planner (see copy_plan.h).
#include "copy_plan.h"

#include <algorithm>
#include <cstring>

#include "blk/block_status.h"

namespace blk::copy_detail {

namespace {

// Salvage narrows a failing block-status query down to one sector.
constexpr uint64_t kSalvageSector = 512;

}  // namespace

Action Planner::classify(unsigned flags, uint64_t pos) const {
    if (flags & kStatusZero) {
        // Beyond the new backing file's end the new target reads as zeroes already.
        if (cfg_.target_has_backing && pos >= cfg_.target_backing_size) return Action::Skip;
        if (cfg_.zero_as_data) return Action::ZeroData;
        return cfg_.target_is_zero ? Action::Skip : Action::WriteZeroes;
    }
    if (flags & kStatusData) return Action::Read;
    // Unallocated down to the base: with -B the new backing file provides it.
    return cfg_.target_has_backing ? Action::Skip : Action::Read;
}

Result<Planner::Run> Planner::query(uint64_t pos) {
    const auto& srcs = cfg_.sources;
    if (src_ >= srcs.size() || pos < srcs[src_].start) src_ = 0;
    while (src_ + 1 < srcs.size() && pos >= srcs[src_].start + srcs[src_].size) ++src_;
    const PlanSource& s = srcs[src_];
    const uint64_t soff = pos - s.start;
    uint64_t want = s.size - soff;
    // Zeroes are handled differently on either side of the new backing file's end.
    const uint64_t bsize = cfg_.target_backing_size;
    if (cfg_.target_has_backing && pos < bsize && want > bsize - pos) want = bsize - pos;

    uint64_t n = want;
    unsigned flags = 0;
    uint64_t bytes = 0;
    const Node* host = nullptr;
    uint64_t host_off = 0;
    for (;;) {
        auto r = block_status_above(s.node, s.base, soff, n);
        if (r) {
            flags = r->status.flags;
            bytes = r->status.bytes;
            host = r->status.file;
            host_off = r->status.offset;
            break;
        }
        const int code = r.error().code;
        if (!cfg_.salvage) {
            // qemu-img's text, then the cause (which table lies where) when it says more.
            std::string msg = "error while reading block status at offset " + std::to_string(soff) + ": " + std::strerror(code);
            if (r.error().message != std::strerror(code)) msg += " (" + r.error().message + ")";
            return make_error(code, std::move(msg));
        }
        if (n <= kSalvageSector) {
            // One sector whose status is unknown: read it and let the read decide.
            if (cfg_.warn) {
                cfg_.warn("error while reading block status at offset " + std::to_string(soff) + ": " +
                          std::strerror(code));
            }
            flags = kStatusData;
            bytes = n;
            break;
        }
        uint64_t quarter = (n + 3) / 4;
        n = std::min(want, std::max(kSalvageSector, (quarter + kSalvageSector - 1) / kSalvageSector * kSalvageSector));
    }
    Run run{pos, pos + bytes, classify(flags, pos)};
    if (flags & kStatusOffsetValid) {
        run.host = host;
        run.host_off = host_off;
    }
    return run;
}

bool Planner::contiguous(const Run& prev, const Run& next) {
    if (!prev.host || !next.host) return !prev.host && !next.host;
    return next.host == prev.host && next.host_off == prev.host_off + (next.start - prev.start);
}

Result<Planner::Run> Planner::run_at(uint64_t pos) {
    if (have_run_ && pos >= run_.start && pos < run_.end) return run_;
    BLK_TRY_ASSIGN(run_, query(pos));
    have_run_ = true;
    return run_;
}

Result<std::optional<Request>> Planner::next() {
    return cfg_.cluster ? next_compressed() : next_plain();
}

Result<std::optional<Request>> Planner::next_plain() {
    for (;;) {
        if (pos_ >= cfg_.total) return std::optional<Request>{};
        BLK_TRY_ASSIGN(Run r, run_at(pos_));
        if (r.action == Action::Skip) {
            skipped_ += r.end - pos_;
            pos_ = r.end;
            prev_ = Action::Skip;
            continue;
        }
        const Action a = r.action;
        const uint64_t unit = a == Action::WriteZeroes ? cfg_.zero_request_size : cfg_.request_size;
        const uint64_t limit = std::min(pos_ - pos_ % unit + unit, cfg_.total);
        uint64_t end = std::min(r.end, limit);
        bool changed = false;
        Run last = r;
        while (end < limit) {
            BLK_TRY_ASSIGN(Run n, run_at(end));
            if (n.action != a) {
                changed = true;
                break;
            }
            // Still data, but elsewhere on the host (another layer, another place): a cut
            // inside the data, not an edge of it.
            if (a == Action::Read && !contiguous(last, n)) break;
            end = std::min(n.end, limit);
            last = n;
        }
        Request q;
        q.off = pos_;
        q.len = end - pos_;
        q.action = a;
        if (a == Action::Read) {
            q.head_edge = !prev_ || *prev_ != Action::Read;
            if (end == cfg_.total || changed) {
                q.tail_edge = true;
            } else {
                BLK_TRY_ASSIGN(Run n, run_at(end));
                q.tail_edge = n.action != Action::Read;
            }
        }
        prev_ = a;
        pos_ = end;
        return std::optional<Request>{q};
    }
}

Result<Action> Planner::cluster_action(uint64_t pos, uint64_t end) {
    BLK_TRY_ASSIGN(Run r, run_at(pos));
    const Action a = r.action;
    for (uint64_t p = r.end; p < end;) {
        BLK_TRY_ASSIGN(Run n, run_at(p));
        if (n.action != a) return Action::Read;  // mixed: the whole cluster is read
        p = n.end;
    }
    return a;
}

Result<uint64_t> Planner::extend_clusters(uint64_t end, Action a, uint64_t limit) {
    const uint64_t cs = cfg_.cluster;
    while (end < limit) {
        const uint64_t cend = std::min(end + cs, cfg_.total);
        BLK_TRY_ASSIGN(Run r, run_at(end));
        if (r.action == a && r.end >= cend) {
            // Every whole cluster inside this run has its action: jump over them at once.
            uint64_t e = r.end >= cfg_.total ? cfg_.total : r.end - r.end % cs;
            end = std::min(e, limit);
            continue;
        }
        BLK_TRY_ASSIGN(Action b, cluster_action(end, cend));
        if (b != a) break;
        end = cend;
    }
    return end;
}

Result<std::optional<Request>> Planner::next_compressed() {
    const uint64_t cs = cfg_.cluster;
    for (;;) {
        if (pos_ >= cfg_.total) return std::optional<Request>{};
        const uint64_t cend = std::min(pos_ + cs, cfg_.total);
        BLK_TRY_ASSIGN(Action a, cluster_action(pos_, cend));
        uint64_t limit = cfg_.total;
        if (a != Action::Skip) {
            const uint64_t unit = a == Action::WriteZeroes ? cfg_.zero_request_size : cfg_.request_size;
            limit = std::min(pos_ - pos_ % unit + unit, cfg_.total);
        }
        BLK_TRY_ASSIGN(uint64_t end, extend_clusters(cend, a, limit));
        if (a == Action::Skip) {
            skipped_ += end - pos_;
            pos_ = end;
            continue;
        }
        Request q;
        q.off = pos_;
        q.len = end - pos_;
        q.action = a;
        pos_ = end;
        return std::optional<Request>{q};
    }
}

}  // namespace blk::copy_detail
