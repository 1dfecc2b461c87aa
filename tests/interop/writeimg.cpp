// blk-writeimg: opens an image read-write through libblock and applies operations, so
// tests can do the same with qemu-io and compare. Each operation is one argument:
//   write DATA OFF LEN        DATA: a byte (0x5a) or @FILE (its bytes, repeated, as qemu-io -s)
//   zero OFF LEN [unmap] [nofallback]
//   discard OFF LEN
//   compress DATA OFF LEN     compressed writes of the clusters in [OFF, OFF+LEN)
//   parallel THREADS CHUNK DATA OFF LEN   THREADS writers, interleaved CHUNK-sized pieces
//   stress THREADS OPS SEED   THREADS threads own interleaved 1000-byte stripes (so they share
//                             every cluster) and each does OPS random writes and zero writes
//                             on its stripes, reading each back; the whole image must then
//                             read as the model of those operations says
//   truncate SIZE [off|metadata|falloc|full]
//   flush
//   incomplete on|off         Node::set_incomplete
//   die                       SIGKILL ourselves (no flush, no destructor)
//   facts                     prints "zero_init=0|1 compress=0|1 incomplete=0|1"
// Numbers take qemu's suffixes (k, M, G). Exits 1 with one error line on failure.
// usage: blk-writeimg [-f FMT] [--image-opts] IMAGE OP...
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "blk/driver.h"

namespace {

[[noreturn]] void die(const std::string& msg) {
    std::fprintf(stderr, "blk-writeimg: %s\n", msg.c_str());
    std::exit(1);
}

uint64_t num(const std::string& s) {
    auto v = blk::parse_size(s);
    if (!v) die("bad number '" + s + "'");
    return *v;
}

// The bytes of DATA for guest range [off, off+len) of an operation starting at `start`.
struct Data {
    int byte = -1;
    std::vector<std::byte> file;
    void fill(std::span<std::byte> out, uint64_t pos) const {
        if (byte >= 0) {
            std::memset(out.data(), byte, out.size());
            return;
        }
        for (uint64_t i = 0; i < out.size();) {
            const uint64_t at = (pos + i) % file.size();
            const uint64_t n = std::min<uint64_t>(out.size() - i, file.size() - at);
            std::memcpy(out.data() + i, file.data() + at, n);
            i += n;
        }
    }
};

Data data(const std::string& s, uint64_t len) {
    Data d;
    if (!s.empty() && s[0] == '@') {
        std::ifstream f(s.substr(1), std::ios::binary);
        if (!f) die("cannot read " + s.substr(1));
        f.seekg(0, std::ios::end);
        const uint64_t have = std::min<uint64_t>(len, static_cast<uint64_t>(f.tellg()));
        f.seekg(0);
        d.file.resize(have);
        f.read(reinterpret_cast<char*>(d.file.data()), static_cast<std::streamsize>(have));
        if (d.file.empty() || static_cast<uint64_t>(f.gcount()) != have) die("cannot read " + s.substr(1));
    } else {
        d.byte = static_cast<int>(std::stoul(s, nullptr, 0) & 0xff);
    }
    return d;
}

void check(const blk::Status& st, const std::string& what) {
    if (!st) die(what + ": " + st.error().message);
}

// See "stress" above.
void stress(blk::Node& n, unsigned threads, uint64_t ops, uint64_t seed) {
    constexpr uint64_t kStripe = 1000;
    const uint64_t size = n.size();
    std::vector<std::byte> model(size);
    check(n.read(0, model), "stress: reading the initial content");
    const uint64_t stripes = size / kStripe;
    std::vector<std::string> errors(threads);
    std::vector<std::thread> pool;
    for (unsigned t = 0; t < threads; ++t) {
        pool.emplace_back([&, t] {
            std::mt19937_64 rng(seed * 1000 + t);
            std::vector<std::byte> buf, back;
            for (uint64_t i = 0; i < ops; ++i) {
                const uint64_t stripe = (rng() % (stripes / threads)) * threads + t;
                const uint64_t a = rng() % kStripe, b = a + 1 + rng() % (kStripe - a);
                const uint64_t off = stripe * kStripe + a, len = b - a;
                blk::Status st;
                if (rng() % 4 == 0) {
                    st = n.write_zeroes(off, len, rng() % 2 ? unsigned{blk::kZeroMayUnmap} : 0u);
                    std::memset(model.data() + off, 0, len);
                } else {
                    buf.resize(len);
                    for (auto& x : buf) x = std::byte(rng());
                    st = n.write(off, buf);
                    std::memcpy(model.data() + off, buf.data(), len);
                }
                if (!st) {
                    errors[t] = st.error().message;
                    return;
                }
                back.resize(kStripe);
                st = n.read(stripe * kStripe, back);
                if (!st || std::memcmp(back.data(), model.data() + stripe * kStripe, kStripe) != 0) {
                    errors[t] = "stripe " + std::to_string(stripe) + " does not read back as written";
                    return;
                }
            }
        });
    }
    for (auto& th : pool) th.join();
    for (auto& e : errors)
        if (!e.empty()) die("stress: " + e);
    check(n.flush(), "stress: flush");
    std::vector<std::byte> all(size);
    check(n.read(0, all), "stress: reading back");
    for (uint64_t i = 0; i < size; ++i) {
        if (all[i] != model[i]) die("stress: byte " + std::to_string(i) + " differs from the model");
    }
}

}  // namespace

int main(int argc, char** argv) {
    blk::ImageSpec spec;
    std::vector<std::string> ops;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        if (a == "-f" && i + 1 < argc) spec.format = argv[++i];
        else if (a == "--image-opts") spec.image_opts = true;
        else if (spec.filename.empty()) spec.filename = a;
        else ops.push_back(a);
    }
    if (spec.filename.empty()) {
        std::fprintf(stderr, "usage: blk-writeimg [-f FMT] [--image-opts] IMAGE OP...\n");
        return 2;
    }
    blk::OpenFlags flags;
    flags.read_only = false;
    flags.discard_unmap = true;  // as qemu-io, whose images open with discard=unmap
    auto g = blk::open_image(spec, flags);
    if (!g) die("Could not open '" + spec.filename + "': " + g.error().message);
    blk::Node& n = *g->root;
    for (const std::string& op : ops) {
        std::istringstream in(op);
        std::vector<std::string> w{std::istream_iterator<std::string>(in), std::istream_iterator<std::string>()};
        if (w.empty()) continue;
        const std::string& cmd = w[0];
        if (cmd == "write" && w.size() == 4) {
            const uint64_t off = num(w[2]), len = num(w[3]);
            Data d = data(w[1], len);
            std::vector<std::byte> buf(len);
            d.fill(buf, 0);
            check(n.write(off, buf), op);
        } else if (cmd == "zero" && w.size() >= 3) {
            unsigned fl = 0;
            for (size_t i = 3; i < w.size(); ++i) {
                if (w[i] == "unmap") fl |= blk::kZeroMayUnmap;
                else if (w[i] == "nofallback") fl |= blk::kZeroNoFallback;
                else die("bad flag in '" + op + "'");
            }
            check(n.write_zeroes(num(w[1]), num(w[2]), fl), op);
        } else if (cmd == "discard" && w.size() == 3) {
            check(n.discard(num(w[1]), num(w[2])), op);
        } else if (cmd == "compress" && w.size() == 4) {
            const uint64_t off = num(w[2]), len = num(w[3]);
            const uint64_t cs = n.cluster_size().value_or(0);
            if (cs == 0 || off % cs) die("compress needs a cluster-aligned offset");
            Data d = data(w[1], len);
            for (uint64_t pos = 0; pos < len; pos += cs) {
                const uint64_t piece = std::min({cs, len - pos, n.size() - off - pos});
                std::vector<std::byte> buf(piece);
                d.fill(buf, pos);
                auto c = n.compress_cluster(buf);
                if (!c) die(op + ": " + c.error().message);
                check(n.write_compressed(off + pos, piece, *c), op);
            }
        } else if (cmd == "parallel" && w.size() == 6) {
            const unsigned threads = static_cast<unsigned>(num(w[1]));
            const uint64_t chunk = num(w[2]), off = num(w[4]), len = num(w[5]);
            Data d = data(w[3], len);
            std::vector<std::thread> pool;
            std::vector<blk::Status> res(threads);
            for (unsigned t = 0; t < threads; ++t) {
                pool.emplace_back([&, t] {
                    std::vector<std::byte> buf;
                    for (uint64_t pos = uint64_t{t} * chunk; pos < len; pos += uint64_t{threads} * chunk) {
                        buf.resize(std::min(chunk, len - pos));
                        d.fill(buf, pos);
                        auto st = n.write(off + pos, buf);
                        if (!st) {
                            res[t] = st;
                            return;
                        }
                    }
                });
            }
            for (auto& th : pool) th.join();
            for (auto& r : res) check(r, op);
        } else if (cmd == "stress" && w.size() == 4) {
            stress(n, static_cast<unsigned>(num(w[1])), num(w[2]), num(w[3]));
        } else if (cmd == "truncate" && (w.size() == 2 || w.size() == 3)) {
            auto mode = blk::parse_prealloc(w.size() == 3 ? w[2] : "off");
            if (!mode) die("bad preallocation mode in '" + op + "'");
            check(n.truncate(num(w[1]), *mode), op);
        } else if (cmd == "flush" && w.size() == 1) {
            check(n.flush(), op);
        } else if (cmd == "incomplete" && w.size() == 2) {
            check(n.set_incomplete(w[1] == "on"), op);
        } else if (cmd == "facts" && w.size() == 1) {
            std::printf("zero_init=%d compress=%d incomplete=%d\n", n.caps().zero_init, n.caps().write_compressed, n.incomplete());
        } else if (cmd == "die" && w.size() == 1) {
            std::fflush(nullptr);
            std::raise(SIGKILL);
        } else {
            die("unknown operation '" + op + "'");
        }
    }
    check(n.flush(), "flush");
    return 0;
}
